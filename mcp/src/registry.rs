//! The sandboxes a set of tools started, by name: one per stdio session, one for the agent's
//! HTTP endpoint (its requests may each get a fresh handler — the 2026-07-28 protocol has no
//! sessions — so what they start is kept here, not in the handler).

use std::collections::HashMap;
use std::sync::Arc;

use microsandbox::Sandbox;
use tokio::sync::Mutex;

#[derive(Clone, Default)]
pub struct Registry(Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<Sandbox>>>>>);

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Sandbox>>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mutex<Sandbox>>> {
        self.map().get(name).cloned()
    }

    pub fn insert(&self, name: String, sandbox: Sandbox) {
        self.map().insert(name, Arc::new(Mutex::new(sandbox)));
    }

    pub fn take(&self, name: &str) -> Option<Arc<Mutex<Sandbox>>> {
        self.map().remove(name)
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn all(&self) -> Vec<Arc<Mutex<Sandbox>>> {
        self.map().values().cloned().collect()
    }

    /// Take every sandbox out.
    pub fn drain(&self) -> Vec<Arc<Mutex<Sandbox>>> {
        self.map().drain().map(|(_, s)| s).collect()
    }
}
