//! Dockerfile syntax: bytes → directives and instructions with spans ([`syntax`]), typed and
//! validated commands ([`instruction`]), word expansion ([`shell`]) and BuildKit-style
//! diagnostics ([`diagnostic`]). Pure: no I/O, and nothing of the rest of the crate.

pub mod diagnostic;
pub mod instruction;
pub mod shell;
mod shell_pattern;
pub mod syntax;

#[cfg(test)]
mod tests;
