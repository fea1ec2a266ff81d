//! Which containers are agents, and what their labels say about them.

use std::collections::BTreeMap;

use crate::model::AgentClass;

/// Label read for the latency/batch class.
pub const CLASS_LABEL: &str = "sutazai.class";
/// Label read for the agent's priority (an integer; higher matters more).
pub const PRIORITY_LABEL: &str = "sutazai.priority";

/// Decides whether a container counts as an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRule {
    pub label: String,
    pub all_containers: bool,
}

impl AgentRule {
    pub fn is_agent(&self, labels: &BTreeMap<String, String>) -> bool {
        self.all_containers || labels.contains_key(&self.label)
    }

    /// The label to show operators; `None` when every container counts.
    pub fn shown_label(&self) -> Option<String> {
        (!self.all_containers).then(|| self.label.clone())
    }
}

/// `sutazai.class`: "latency" or "batch" (any case). Anything else is ignored with a debug log.
pub fn class_of(labels: &BTreeMap<String, String>) -> Option<AgentClass> {
    let value = labels.get(CLASS_LABEL)?;
    match value.trim().to_ascii_lowercase().as_str() {
        "latency" => Some(AgentClass::Latency),
        "batch" => Some(AgentClass::Batch),
        _ => {
            tracing::debug!(label = CLASS_LABEL, value, "ignoring unknown agent class");
            None
        }
    }
}

/// `sutazai.priority`: an integer. Anything else is ignored with a debug log.
pub fn priority_of(labels: &BTreeMap<String, String>) -> Option<i32> {
    let value = labels.get(PRIORITY_LABEL)?;
    match value.trim().parse() {
        Ok(p) => Some(p),
        Err(_) => {
            tracing::debug!(
                label = PRIORITY_LABEL,
                value,
                "ignoring non-integer priority"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_rule_and_all_rule() {
        let rule = AgentRule {
            label: "sutazai.agent".into(),
            all_containers: false,
        };
        assert!(rule.is_agent(&labels(&[("sutazai.agent", "")])));
        assert!(!rule.is_agent(&labels(&[("other", "1")])));
        let all = AgentRule {
            all_containers: true,
            ..rule
        };
        assert!(all.is_agent(&labels(&[])));
    }

    #[test]
    fn class_and_priority_parse_or_are_ignored() {
        let l = labels(&[("sutazai.class", " Batch "), ("sutazai.priority", "-3")]);
        assert_eq!(class_of(&l), Some(AgentClass::Batch));
        assert_eq!(priority_of(&l), Some(-3));
        let l = labels(&[("sutazai.class", "turbo"), ("sutazai.priority", "high")]);
        assert_eq!(class_of(&l), None);
        assert_eq!(priority_of(&l), None);
        assert_eq!(
            class_of(&labels(&[("sutazai.class", "latency")])),
            Some(AgentClass::Latency)
        );
    }
}
