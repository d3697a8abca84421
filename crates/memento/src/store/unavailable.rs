//! The store of a location that cannot be used: an `s3://` URL without a
//! bucket, or one in a build without the `s3` feature. `Memory::new`
//! cannot fail (a cached call never fails because of its cache), so such a
//! location is said once, in a warning, and gets this store: nothing is
//! found, nothing is kept (calls are computed), and management (`stats`,
//! the CLI) gets the reason as its error.

use std::ops::Range;

use super::{ObjectMeta, Store};
use crate::error::{Error, Result};

/// The store of a location that cannot be used (said once, when it was
/// opened): nothing is found, nothing is kept, and management says why.
#[derive(Debug)]
pub(crate) struct Unavailable {
    location: String,
    reason: String,
}

impl Unavailable {
    /// The store of `location`, unusable because of `reason` (what to
    /// change).
    pub(crate) fn new(location: &str, reason: String) -> Unavailable {
        Unavailable {
            location: location.to_string(),
            reason,
        }
    }

    fn error(&self) -> Error {
        Error::Unusable {
            location: self.location.clone(),
            reason: self.reason.clone(),
        }
    }
}

impl Store for Unavailable {
    fn read(&self, _: &str, _: &mut Vec<u8>) -> Result<bool> {
        Ok(false)
    }

    fn read_range(&self, _: &str, _: Range<u64>, _: &mut Vec<u8>) -> Result<bool> {
        Ok(false)
    }

    fn publish(&self, _: &str, _: &[u8]) -> Result<bool> {
        Ok(false)
    }

    fn write(&self, _: &str, _: &[u8]) -> Result<()> {
        Ok(())
    }

    fn list_meta(&self, _: &str) -> Result<Vec<ObjectMeta>> {
        Err(self.error())
    }

    fn delete(&self, _: &str) -> Result<()> {
        Err(self.error())
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
