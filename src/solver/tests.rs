//! Tests of `solver/mod.rs`: a panicking op is turned into its failure.

use super::*;

#[test]
fn a_panicking_op_becomes_its_failure_with_the_message() {
    let result: Result<(), OpError> = caught(|| panic!("index {} out of range", 7));
    assert!(matches!(&result, Err(OpError::Panicked(message)) if message == "index 7 out of range"), "{result:?}");
    let result: Result<(), OpError> = caught(|| panic!("static text"));
    assert!(matches!(&result, Err(OpError::Panicked(message)) if message == "static text"), "{result:?}");
    assert_eq!(result.unwrap_err().to_string(), "internal error: static text");
}

#[test]
fn an_op_that_returns_is_passed_through() {
    assert!(matches!(caught(|| Ok::<_, OpError>(5)), Ok(5)));
    assert!(matches!(caught(|| Err::<(), _>(OpError::Canceled)), Err(OpError::Canceled)));
}
