//! The sandboxes a set of tools started, by name, and their interpreters: one registry per
//! stdio session, one for the agent's HTTP endpoint (its requests may each get a fresh handler —
//! the 2026-07-28 protocol has no sessions — so what they start is kept here, not in the
//! handler).

use std::collections::HashMap;
use std::sync::Arc;

use microsandbox::{Language, Repl, Sandbox};
use tokio::sync::Mutex;

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, Arc<Mutex<Sandbox>>>,
    /// `sandbox_run_code`'s interpreters, by sandbox and language.
    repls: HashMap<(String, Language), Arc<Mutex<Repl>>>,
}

#[derive(Clone, Default)]
pub struct Registry(Arc<std::sync::Mutex<Inner>>);

impl Registry {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mutex<Sandbox>>> {
        self.inner().sandboxes.get(name).cloned()
    }

    pub fn insert(&self, name: String, sandbox: Sandbox) {
        self.inner()
            .sandboxes
            .insert(name, Arc::new(Mutex::new(sandbox)));
    }

    /// Take sandbox `name` out, dropping its interpreters.
    pub fn take(&self, name: &str) -> Option<Arc<Mutex<Sandbox>>> {
        let mut inner = self.inner();
        inner.repls.retain(|(sandbox, _), _| sandbox != name);
        inner.sandboxes.remove(name)
    }

    /// The interpreter of `language` in sandbox `name`, if one was started.
    pub fn repl(&self, name: &str, language: Language) -> Option<Arc<Mutex<Repl>>> {
        self.inner()
            .repls
            .get(&(name.to_string(), language))
            .cloned()
    }

    /// Keep `repl` for sandbox `name` (the one kept already wins a race).
    pub fn insert_repl(&self, name: &str, repl: Repl) -> Arc<Mutex<Repl>> {
        self.inner()
            .repls
            .entry((name.to_string(), repl.language()))
            .or_insert_with(|| Arc::new(Mutex::new(repl)))
            .clone()
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner().sandboxes.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn all(&self) -> Vec<Arc<Mutex<Sandbox>>> {
        self.inner().sandboxes.values().cloned().collect()
    }

    /// Take every sandbox out.
    pub fn drain(&self) -> Vec<Arc<Mutex<Sandbox>>> {
        let mut inner = self.inner();
        inner.repls.clear();
        inner.sandboxes.drain().map(|(_, s)| s).collect()
    }
}
