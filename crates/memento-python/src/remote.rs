//! `s3://bucket/prefix` locations: a Memory on a bucket (cargo feature
//! `s3` of this crate), with a near cache in front of it, its settings
//! taken from joblib's `backend_options` dict under boto3's names.
//!
//! Everything the core's S3 store does holds for Python: compute-once
//! across machines by leases, the near cache (by default
//! `~/.cache/memento/<bucket>/<prefix>`), a bucket that cannot be reached
//! is a warning and the call still computes. The settings come from the
//! standard `AWS_*` environment unless `backend_options` gives them; an
//! option this module does not know is an error that lists those it does,
//! so that a typo never silently falls back to the environment.
//!
//! The feature is off by default: it builds object_store, tokio, rustls
//! and aws-lc (C), minutes more of a release build.
//! A build without it refuses an `s3://` location with the command that
//! builds one with it ([`REBUILD`]).

use memento::Memory;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The options an `s3://` location takes in `backend_options`.
pub(crate) const OPTIONS: &[&str] = &[
    "endpoint_url",
    "region_name",
    "allow_http",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "near_cache",
    "near_cache_limit",
    "lease_ttl",
];

/// How to build the package with S3 support.
pub(crate) const REBUILD: &str = "MATURIN_PEP517_ARGS=\"--features s3\" pip install \
                                  ./crates/memento-python (from memento's repository)";

/// Was this build made with the `s3` feature?
pub(crate) const AVAILABLE: bool = cfg!(feature = "s3");

/// Does `location` name a bucket rather than a folder?
pub(crate) fn is_remote(location: &str) -> bool {
    memento::Location::from(location).url().is_some()
}

/// The Memory of the bucket `location` (`s3://bucket/prefix`), with the
/// settings of `options` (see [`OPTIONS`]).
///
/// # Errors
///
/// `ValueError` for an option that is unknown or of the wrong type, a
/// location that names no bucket, an endpoint that is not a URL, or a
/// build without the `s3` feature.
#[cfg(feature = "s3")]
pub(crate) fn open(location: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<Memory> {
    use memento::store::S3Store;

    let mut builder = S3Store::builder(location);
    let mut key_id: Option<String> = None;
    let mut secret: Option<String> = None;
    let mut near: Option<Option<std::path::PathBuf>> = None;
    let mut near_limit: Option<u64> = None;
    for (name, value) in options.into_iter().flat_map(|d| d.iter()) {
        let name: String = name.extract().map_err(|_| {
            PyValueError::new_err(format!(
                "backend_options: keys are option names (str): got {name}"
            ))
        })?;
        let wrong = |expected: &str| {
            PyValueError::new_err(format!(
                "backend_options[{name:?}] must be {expected}: got {value}"
            ))
        };
        match name.as_str() {
            "endpoint_url" => {
                builder = builder.endpoint(str_of(&value).ok_or_else(|| wrong("a URL (str)"))?)
            }
            "region_name" => {
                builder =
                    builder.region(str_of(&value).ok_or_else(|| wrong("a region's name (str)"))?)
            }
            "allow_http" => {
                let allow: bool = value.extract().map_err(|_| wrong("True or False"))?;
                builder = builder.allow_http(allow);
            }
            "aws_access_key_id" => key_id = Some(str_of(&value).ok_or_else(|| wrong("a str"))?),
            "aws_secret_access_key" => secret = Some(str_of(&value).ok_or_else(|| wrong("a str"))?),
            "aws_session_token" => {
                builder = builder.session_token(str_of(&value).ok_or_else(|| wrong("a str"))?)
            }
            "near_cache" => {
                near = Some(if value.is_none() {
                    None
                } else {
                    Some(value.extract().map_err(|_| {
                        wrong("a folder (str or os.PathLike), or None for no near cache")
                    })?)
                })
            }
            "near_cache_limit" => {
                near_limit = Some(
                    value
                        .extract()
                        .map_err(|_| wrong("a number of bytes (int)"))?,
                )
            }
            "lease_ttl" => {
                let seconds: f64 = value.extract().map_err(|_| wrong("seconds (a number)"))?;
                builder =
                    builder.lease_ttl(crate::seconds("backend_options[\"lease_ttl\"]", seconds)?);
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "backend_options: unknown option {name:?} for an s3:// location; the options \
                     are {}",
                    OPTIONS.join(", ")
                )))
            }
        }
    }
    match (key_id, secret) {
        (Some(id), Some(secret)) => builder = builder.credentials(id, secret),
        (None, None) => {}
        _ => {
            return Err(PyValueError::new_err(
                "backend_options: give aws_access_key_id and aws_secret_access_key together \
                 (or neither: then they come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            ))
        }
    }
    let store = builder
        .build()
        .map_err(|e| PyValueError::new_err(format!("cannot use {location:?}: {e}")))?;
    let mut memory = Memory::s3(store);
    match near {
        Some(Some(folder)) => memory = memory.near_cache(folder),
        Some(None) => memory = memory.no_near_cache(),
        None => {}
    }
    if let Some(bytes) = near_limit {
        memory = memory.near_cache_limit(bytes);
    }
    Ok(memory)
}

/// A build without the `s3` feature: every `s3://` location is refused,
/// with the command that builds the package with it.
#[cfg(not(feature = "s3"))]
pub(crate) fn open(location: &str, _options: Option<&Bound<'_, PyDict>>) -> PyResult<Memory> {
    Err(PyValueError::new_err(format!(
        "location {location:?} is a bucket, and this build of memento has no S3 support \
         (the cargo feature s3). Build it with: {REBUILD}"
    )))
}

/// `value` as a `str`, if it is one.
#[cfg(feature = "s3")]
fn str_of(value: &Bound<'_, PyAny>) -> Option<String> {
    value.extract().ok()
}
