//! Reading the input exports: streamed, keyed, validated.

pub mod reader;
pub mod validate;

pub use reader::{ColumnMap, InputError, InputFile, Records};
