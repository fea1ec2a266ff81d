//! Declarations registered through the API, kept in `<state_dir>/agents.json` (0600, by the
//! rule of every owned path) so that they outlive a restart, and laid over the agents'
//! labels each tick.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use sutazai_owned_paths::{Access, OwnedDir, PathError};

use crate::model::{ContainerStat, Declaration};

const FILE: &str = "agents.json";
const TMP: &str = "agents.json.tmp";

/// The declarations saved in `state_dir`; none when the file does not exist.
pub fn load(state_dir: &Path) -> Result<Vec<Declaration>, String> {
    let dir = OwnedDir::ensure(state_dir).map_err(|e| e.to_string())?;
    let mut file = match dir.open(FILE, Access::Read) {
        Ok((file, _)) => file,
        Err(PathError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(Vec::new());
        }
        Err(err) => return Err(err.to_string()),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", dir.path().join(FILE).display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a list of declarations ({e}); fix or remove it",
            dir.path().join(FILE).display()
        )
    })
}

/// Save `declarations` in `state_dir`: written to a new file, synced, renamed into place.
pub fn save(state_dir: &Path, declarations: &[Declaration]) -> Result<(), String> {
    let dir = OwnedDir::ensure(state_dir).map_err(|e| e.to_string())?;
    let tmp = dir.path().join(TMP);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", tmp.display())),
    }
    let text = serde_json::to_vec_pretty(declarations).map_err(|e| e.to_string())?;
    let (mut file, _) = dir
        .open(TMP, Access::CreateNew { create_mode: 0o600 })
        .map_err(|e| e.to_string())?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.path().join(FILE)).map_err(|e| format!("{}: {e}", tmp.display()))
}

/// Whether a declaration's `agent` names this container: its name, its id, or an id prefix
/// of at least 12 digits (Docker's short id).
pub fn names(agent: &str, stat: &ContainerStat) -> bool {
    stat.name == agent || stat.id == agent || (agent.len() >= 12 && stat.id.starts_with(agent))
}

/// Lay the declarations over the agents' labels: a declared agent's need and priority are
/// the declaration's.
pub fn overlay(agents: &mut [ContainerStat], declarations: &[Declaration]) {
    for stat in agents.iter_mut() {
        if let Some(d) = declarations.iter().find(|d| names(&d.agent, stat)) {
            stat.need = Some(d.need.clone());
            stat.need_error = None;
            stat.priority = d.priority.or(stat.priority);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Need;
    use std::os::unix::fs::PermissionsExt;

    fn declaration(agent: &str) -> Declaration {
        Declaration {
            agent: agent.to_string(),
            need: Need {
                cpus: Some(2.0),
                exclusive: true,
                ..Need::default()
            },
            priority: Some(7),
        }
    }

    #[test]
    fn declarations_survive_a_restart_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(load(&state).unwrap(), vec![]);
        let saved = vec![declaration("llm"), declaration("embedder")];
        save(&state, &saved).unwrap();
        assert_eq!(load(&state).unwrap(), saved);
        let mode = std::fs::metadata(state.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        save(&state, &[]).unwrap();
        assert_eq!(load(&state).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        std::fs::set_permissions(
            dir.path().join(FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            err.contains("agents.json") && err.contains("fix or remove"),
            "{err}"
        );
    }

    #[test]
    fn a_declaration_takes_the_place_of_the_labels() {
        let mut agents = vec![
            ContainerStat {
                id: "0123456789abcdef".to_string(),
                name: "llm".to_string(),
                need_error: Some("sutazai.cpus = \"x\"".to_string()),
                priority: Some(1),
                ..ContainerStat::default()
            },
            ContainerStat {
                id: "fedcba9876543210".to_string(),
                name: "other".to_string(),
                ..ContainerStat::default()
            },
        ];
        overlay(&mut agents, &[declaration("0123456789ab")]);
        assert_eq!(agents[0].need.as_ref().and_then(|n| n.cpus), Some(2.0));
        assert_eq!(agents[0].need_error, None);
        assert_eq!(agents[0].priority, Some(7));
        assert_eq!(agents[1].need, None);
        assert!(!names("0123", &agents[0]), "a short prefix names nothing");
    }
}
