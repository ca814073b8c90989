//! The wake-up timer an actor keeps for its sans-IO core: the core says when it next needs a
//! `Tick` (`poll_timeout`), the actor arms one delayed message for the earliest such deadline.

use std::time::Duration;

use ractor::{ActorRef, Message};
use tokio::task::JoinHandle;

/// At most one pending tick, always for the earliest deadline asked for.
#[derive(Debug, Default)]
pub struct CoreTimer {
    at_ms: Option<u64>,
    task: Option<JoinHandle<()>>,
}

impl CoreTimer {
    /// Arms a `tick()` message for `deadline_ms` (mono ms) unless one at or before it is pending.
    pub fn arm<M: Message>(
        &mut self,
        deadline_ms: Option<u64>,
        now_ms: u64,
        actor: &ActorRef<M>,
        tick: fn() -> M,
    ) {
        let Some(deadline_ms) = deadline_ms else { return };
        if self.at_ms.is_some_and(|at| at <= deadline_ms) {
            return;
        }
        self.cancel();
        let delay = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        let actor = actor.clone();
        self.at_ms = Some(deadline_ms);
        self.task = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = actor.cast(tick());
        }));
    }

    /// The pending tick arrived.
    pub fn fired(&mut self) {
        self.at_ms = None;
        self.task = None;
    }

    pub fn cancel(&mut self) {
        self.at_ms = None;
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
