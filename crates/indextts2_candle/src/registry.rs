//! The runnable layer's former name, kept as a plain re-export of [`crate::runnable`] so code that
//! still writes `use crate::registry::{take, Named, Runnable}` compiles. It imports nothing else;
//! the kind table (kind → load, kind → faults) is the `dispatch` module. New code uses `runnable`.
pub use crate::runnable::{expect_float, take, Named, Runnable};
