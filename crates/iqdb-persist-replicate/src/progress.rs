//! Progress reporting for uploads and restores (the command line draws
//! progress bars with it).

/// Receives progress of long transfers. Every method has an empty default.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes begins; `what` names it.
    fn begin(&self, what: &str, total: u64) {
        let _ = (what, total);
    }
    /// `bytes` more bytes were transferred.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// The transfer ended.
    fn end(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
