//! One signal to stop everything: listeners stop accepting, idle sessions are closed with `421`,
//! sessions in DATA finish, the scheduler lets deliveries finish and gives back its leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::broadcast;

#[derive(Clone)]
pub struct Shutdown {
    tx: broadcast::Sender<()>,
    triggered: Arc<AtomicBool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(1);
        Shutdown {
            tx,
            triggered: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        let _ = self.tx.send(());
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// A receiver that also fires at once if shutdown was triggered before it subscribed.
    pub fn subscribe(&self) -> Receiver {
        Receiver {
            rx: self.tx.subscribe(),
            triggered: self.triggered.clone(),
        }
    }
}

pub struct Receiver {
    rx: broadcast::Receiver<()>,
    triggered: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn recv(&mut self) {
        if self.triggered.load(Ordering::SeqCst) {
            return;
        }
        let _ = self.rx.recv().await;
    }
}
