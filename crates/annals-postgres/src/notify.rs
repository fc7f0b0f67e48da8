//! Keeping subscribers' view of the head current when other processes append.
//!
//! The head a subscriber waits on moves forward from three sources: this process's own
//! commits (the appender announces them), `LISTEN/NOTIFY` (every committed group sends
//! one notification on the store's channel carrying the store and its new head), and a
//! poll of the head row every [`crate::PostgresOptions::poll_interval`]. Notifications
//! are only a hint: a subscriber always re-reads committed events from its cursor, so a
//! lost notification delays it until the next poll and never makes it skip anything.
//! When the listening connection drops, the head is re-read at once, since anything
//! committed meanwhile was not announced.
//!
//! Writers send a notification only when some connection listens for the store: the
//! listening connection puts its backend pid on the store's head row after `LISTEN`
//! (and takes it off when it stops), and the write statement reads the pids from the
//! head row version it updates. A `NOTIFY` serialises commits database-wide, so stores
//! nobody follows from another connection commit without one. A registration waits for
//! the writer holding the head row; every write that commits after it notifies, and
//! every one before it is seen by the head re-read that follows it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use annals_core::subscription::CLOSED;
use annals_core::Position;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::Shared;

/// How long to wait before listening again after the listener failed to connect.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Starts the listener (when notifications are on) and the poller of a store.
pub(crate) fn start(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    if shared.options.notifications {
        shared
            .runtime
            .spawn(listen(weak.clone(), shared.head.subscribe()));
    }
    shared.runtime.spawn(poll(
        weak,
        shared.head.subscribe(),
        shared.options.poll_interval,
    ));
}

/// Whether the store behind `head` is closed or gone.
fn ended(head: &watch::Receiver<Position>) -> bool {
    *head.borrow() == CLOSED || head.has_changed().is_err()
}

/// Re-reads the head row and announces it.
async fn refresh(shared: &Shared) {
    match crate::read::head(shared).await {
        Ok(head) => shared.publish(head),
        Err(e) => tracing::debug!(store = %shared.name, error = %e, "reading the head failed"),
    }
}

/// The head a notification announces, if it is about this store.
fn announced(payload: &str, store: &str) -> Option<Position> {
    let (name, head) = payload.rsplit_once(':')?;
    (name == store).then(|| head.parse().ok()).flatten()
}

async fn listen(weak: Weak<Shared>, mut head: watch::Receiver<Position>) {
    loop {
        if ended(&head) {
            return;
        }
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let listener = match PgListener::connect_with(&shared.pool).await {
            Ok(mut l) => match l.listen(&shared.channel).await {
                Ok(()) if register(&shared, &mut l).await => Some(l),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(mut listener) = listener else {
            drop(shared);
            tokio::time::sleep(RECONNECT_DELAY).await;
            continue;
        };
        // Commits before LISTEN took effect were not announced to us.
        refresh(&shared).await;
        drop(shared);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => {
                        let Some(shared) = weak.upgrade() else { return };
                        if let Some(h) = announced(n.payload(), &shared.name) {
                            shared.publish(h);
                        }
                    }
                    Ok(None) => {
                        // The connection dropped (and was re-established with a new
                        // pid): register again, and re-read.
                        let Some(shared) = weak.upgrade() else { return };
                        if !register(&shared, &mut listener).await {
                            break;
                        }
                        refresh(&shared).await;
                    }
                    Err(_) => break,
                },
                changed = head.changed() => {
                    if changed.is_err() || *head.borrow() == CLOSED {
                        if let Some(shared) = weak.upgrade() {
                            unregister(&shared, &mut listener).await;
                        }
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Puts the listening connection's pid on the head row; false when that failed.
async fn register(shared: &Shared, listener: &mut PgListener) -> bool {
    let done = sqlx::query(&shared.sql.register_listener)
        .bind(shared.store_id)
        .execute(&mut *listener)
        .await;
    match done {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(store = %shared.name, error = %e, "registering the listener failed");
            false
        }
    }
}

/// Takes the listening connection's pid off the head row (best effort: a pid left
/// behind only costs notifications, and the next registration drops it).
async fn unregister(shared: &Shared, listener: &mut PgListener) {
    let _ = sqlx::query(&shared.sql.unregister_listener)
        .bind(shared.store_id)
        .execute(&mut *listener)
        .await;
}

async fn poll(weak: Weak<Shared>, mut head: watch::Receiver<Position>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(shared) = weak.upgrade() else { return };
                if ended(&head) {
                    return;
                }
                refresh(&shared).await;
            }
            changed = head.changed() => {
                if changed.is_err() || *head.borrow() == CLOSED {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::announced;

    #[test]
    fn a_notification_names_the_store_and_its_head() {
        assert_eq!(announced("orders:42", "orders"), Some(42));
        assert_eq!(announced("a:b:7", "a:b"), Some(7));
        assert_eq!(announced("other:42", "orders"), None);
        assert_eq!(announced("orders:x", "orders"), None);
        assert_eq!(announced("garbage", "orders"), None);
    }
}
