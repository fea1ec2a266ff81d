//! Agent names interned to small ids: every get counts per agent, and a `u32` index into a
//! shard's counters is far cheaper there than hashing and looking up the name in a map per
//! shard. A thread remembers the last name it resolved (compared by content, per cache), so
//! a caller that keeps one name pays no map lookup at all.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::keys::FastBuild;
use super::stats::{MAX_AGENTS, OTHER_AGENTS};

/// An interned agent name, the index of its counters.
pub(crate) type AgentId = u32;

/// Tells the interners of different caches apart in the thread-local memo.
static NEXT_BOOK: AtomicU64 = AtomicU64::new(1);

/// The last (interner, name, id) this thread resolved.
struct Memo {
    book: u64,
    name: String,
    id: AgentId,
}

thread_local! {
    static LAST: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct Interned {
    ids: HashMap<Arc<str>, AgentId, FastBuild>,
    names: Vec<Arc<str>>,
}

/// One cache's agent names and their ids.
pub(crate) struct AgentNames {
    book: u64,
    interned: RwLock<Interned>,
}

impl AgentNames {
    pub fn new() -> Self {
        Self {
            book: NEXT_BOOK.fetch_add(1, Ordering::Relaxed),
            interned: RwLock::new(Interned::default()),
        }
    }

    /// The id of `agent`: a new one for a new name while fewer than `MAX_AGENTS` are
    /// known, else the id of `OTHER_AGENTS`.
    pub fn id(&self, agent: &str) -> AgentId {
        let remembered = LAST.try_with(|last| match &*last.borrow() {
            Some(memo) if memo.book == self.book && memo.name == agent => Some(memo.id),
            _ => None,
        });
        if let Ok(Some(id)) = remembered {
            return id;
        }
        let id = self.resolve(agent);
        // Reuses the memo's buffer: a thread alternating agents does not allocate per get.
        let _ = LAST.try_with(|last| {
            let mut last = last.borrow_mut();
            let memo = last.get_or_insert_with(|| Memo {
                book: 0,
                name: String::new(),
                id: 0,
            });
            memo.book = self.book;
            memo.name.clear();
            memo.name.push_str(agent);
            memo.id = id;
        });
        id
    }

    fn resolve(&self, agent: &str) -> AgentId {
        {
            let interned = self.read();
            if let Some(&id) = interned.ids.get(agent) {
                return id;
            }
            // Past the cap every new name shares one id: no write lock for each of them.
            if interned.names.len() > MAX_AGENTS
                && let Some(&id) = interned.ids.get(OTHER_AGENTS)
            {
                return id;
            }
        }
        let mut interned = self.interned.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&id) = interned.ids.get(agent) {
            return id;
        }
        let name = if interned.names.len() < MAX_AGENTS {
            agent
        } else {
            OTHER_AGENTS
        };
        if let Some(&id) = interned.ids.get(name) {
            return id;
        }
        let id = interned.names.len() as AgentId;
        let name: Arc<str> = Arc::from(name);
        interned.names.push(name.clone());
        interned.ids.insert(name, id);
        id
    }

    /// The names by id (for a snapshot).
    pub fn names(&self) -> Vec<Arc<str>> {
        self.read().names.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Interned> {
        // Interning only appends, so a panic mid-way leaves nothing a reader could misread.
        self.interned.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_stable_ids_and_the_overflow_shares_one() {
        let names = AgentNames::new();
        let a = names.id("agent-a");
        let b = names.id("agent-b");
        assert_ne!(a, b);
        assert_eq!(names.id("agent-a"), a, "memo hit");
        assert_eq!(names.id("agent-b"), b, "map hit after the memo moved on");
        for i in 0..MAX_AGENTS + 5 {
            names.id(&format!("a{i}"));
        }
        let all = names.names();
        assert_eq!(all.len(), MAX_AGENTS + 1);
        assert_eq!(&*all[names.id("a-new-one") as usize], OTHER_AGENTS);
        assert_eq!(&*all[a as usize], "agent-a");
    }

    #[test]
    fn two_caches_do_not_share_ids_through_the_memo() {
        let (one, two) = (AgentNames::new(), AgentNames::new());
        one.id("x");
        assert_eq!(one.id("y"), 1);
        // The memo holds ("y", 1) of `one`; `two` must not take it.
        assert_eq!(two.id("y"), 0);
        assert_eq!(one.id("y"), 1);
    }
}
