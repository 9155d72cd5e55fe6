//! The background walker of `portwatch export`: a snapshot-only session on a thread of its
//! own takes the bind-table walks the collector asks for, so a scrape never waits for a
//! full-table walk; the collector only reconciles the finished walk with its reducer.

use std::{sync::mpsc, thread::JoinHandle};

use crate::{backend::ProbeSession, model::Snapshot, snapshot::SnapOptions};

/// The collector's handle on the walker thread.
pub struct Walker {
    requests: Option<mpsc::Sender<()>>,
    walks: mpsc::Receiver<Result<Snapshot, String>>,
    /// A walk was asked for and has not been taken yet.
    pending: bool,
    thread: Option<JoinHandle<()>>,
}

impl Walker {
    /// Starts the thread; it walks with `opts` once per request and ends (dropping its
    /// session, which detaches the trigger) when the walker is dropped.
    pub fn spawn(mut session: ProbeSession, opts: SnapOptions) -> std::io::Result<Walker> {
        let (req_tx, req_rx) = mpsc::channel::<()>();
        let (walk_tx, walk_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("portwatch-walk".into())
            .spawn(move || {
                for () in req_rx {
                    let walk = session
                        .snapshot(&opts)
                        .map_err(|e| format!("rescanning the bind table: {e}"));
                    if walk_tx.send(walk).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Walker {
            requests: Some(req_tx),
            walks: walk_rx,
            pending: false,
            thread: Some(thread),
        })
    }

    /// Asks for a walk unless one is under way; false when the thread is gone.
    pub fn request(&mut self) -> bool {
        if self.pending {
            return true;
        }
        let sent = self.requests.as_ref().is_some_and(|tx| tx.send(()).is_ok());
        self.pending = sent;
        sent
    }

    /// Whether a walk was asked for and not taken yet.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// The walk asked for, if it is done.
    pub fn try_take(&mut self) -> Option<Result<Snapshot, String>> {
        if !self.pending {
            return None;
        }
        let walk = match self.walks.try_recv() {
            Ok(w) => w,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err("the walker thread has stopped".to_string())
            }
        };
        self.pending = false;
        Some(walk)
    }

    /// Waits for the walk asked for (`None` when none was).
    pub fn wait(&mut self) -> Option<Result<Snapshot, String>> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        Some(
            self.walks
                .recv()
                .unwrap_or_else(|_| Err("the walker thread has stopped".to_string())),
        )
    }
}

impl Drop for Walker {
    fn drop(&mut self) {
        // Closing the request channel ends the thread's loop.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
