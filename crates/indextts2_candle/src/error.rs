//! One error type for the whole crate. The bindings map each variant to its own Python exception,
//! so a user can tell a bad checkpoint from bad input from a numerical failure.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The checkpoint file is unreadable, or a key is missing / mis-shaped / mis-typed / non-finite.
    #[error("{0}")]
    Checkpoint(String),
    /// The caller's input (tensor shape, config, fault name, injected tap) is wrong.
    #[error("{0}")]
    Input(String),
    /// A Candle operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn input_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Input(msg.into()))
}
