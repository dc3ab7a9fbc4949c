//! Evaluation of [`Filter`] expressions against record metadata.
//!
//! The store evaluates filters itself rather than depending on an engine
//! crate, so the reference index has no behaviour it cannot show in its own
//! source. The rules follow the closed-world semantics documented on
//! [`iqdb_types::Filter`], with one deliberate refinement (numeric
//! comparison across `Int` and `Float`):
//!
//! * a leaf over an absent key, or a record with no metadata, is `false`;
//! * `Int` and `Float` compare numerically with each other (exactly, without
//!   rounding the integer through `f64`), strings lexicographically by bytes,
//!   `Bool` with `false < true`, `Null` equal only to `Null`;
//! * values of kinds that do not compare (a string against a number, or a
//!   NaN float) make every leaf `false`, including `Neq`;
//! * `Not` negates, so `Not(Eq(..))` is `true` where the key is absent.

use std::cmp::Ordering;

use iqdb_types::{Filter, IqdbError, Metadata, Value};

/// Deepest `And`/`Or`/`Not` nesting a search accepts. Deeper filters are
/// rejected with [`IqdbError::InvalidFilter`] before evaluation, so the
/// recursive evaluator cannot overflow the stack. Matches `iqdb-filter`.
pub const MAX_FILTER_DEPTH: usize = 64;

/// Checks the nesting depth of `filter` without recursion.
pub(crate) fn validate(filter: &Filter) -> Result<(), IqdbError> {
    let mut stack: Vec<(&Filter, usize)> = vec![(filter, 1)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_FILTER_DEPTH {
            return Err(IqdbError::InvalidFilter);
        }
        match node {
            Filter::And(children) | Filter::Or(children) => {
                stack.extend(children.iter().map(|child| (child, depth + 1)));
            }
            Filter::Not(inner) => stack.push((inner, depth + 1)),
            Filter::Eq { .. }
            | Filter::Neq { .. }
            | Filter::Lt { .. }
            | Filter::Lte { .. }
            | Filter::Gt { .. }
            | Filter::Gte { .. }
            | Filter::In { .. } => {}
        }
    }
    Ok(())
}

/// Evaluates a filter that passed [`validate`] against one record.
pub(crate) fn matches(filter: &Filter, metadata: Option<&Metadata>) -> bool {
    match filter {
        Filter::Eq { field, value } => cmp_field(metadata, field, value) == Some(Ordering::Equal),
        Filter::Neq { field, value } => matches!(
            cmp_field(metadata, field, value),
            Some(Ordering::Less | Ordering::Greater)
        ),
        Filter::Lt { field, value } => cmp_field(metadata, field, value) == Some(Ordering::Less),
        Filter::Lte { field, value } => matches!(
            cmp_field(metadata, field, value),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Filter::Gt { field, value } => cmp_field(metadata, field, value) == Some(Ordering::Greater),
        Filter::Gte { field, value } => matches!(
            cmp_field(metadata, field, value),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Filter::In { field, values } => match metadata.and_then(|m| m.get(field)) {
            Some(actual) => values
                .iter()
                .any(|candidate| compare(actual, candidate) == Some(Ordering::Equal)),
            None => false,
        },
        Filter::And(children) => children.iter().all(|child| matches(child, metadata)),
        Filter::Or(children) => children.iter().any(|child| matches(child, metadata)),
        Filter::Not(inner) => !matches(inner, metadata),
    }
}

fn cmp_field(metadata: Option<&Metadata>, field: &str, literal: &Value) -> Option<Ordering> {
    compare(metadata?.get(field)?, literal)
}

/// Orders a stored value against a literal; `None` when they do not compare.
pub(crate) fn compare(actual: &Value, literal: &Value) -> Option<Ordering> {
    match (actual, literal) {
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::Int(a), Value::Float(b)) => cmp_int_float(*a, *b),
        (Value::Float(a), Value::Int(b)) => cmp_int_float(*b, *a).map(Ordering::reverse),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

/// Compares an `i64` with an `f64` exactly (no rounding of the integer).
fn cmp_int_float(int: i64, float: f64) -> Option<Ordering> {
    // 2^63: the first f64 above every i64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if float < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = float.trunc();
    // In range [-2^63, 2^63) and integral, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i64;
    Some(int.cmp(&whole_int).then_with(|| {
        // Same integer part: the fractional part of the float decides.
        if float > whole {
            Ordering::Less
        } else if float < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_float_comparison_is_exact() {
        assert_eq!(cmp_int_float(1, 1.0), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(1, 1.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(2, 1.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(-2, -1.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-1, -1.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(i64::MAX, 9.3e18), Some(Ordering::Less));
        assert_eq!(cmp_int_float(i64::MIN, -9.3e18), Some(Ordering::Greater));
        assert_eq!(
            cmp_int_float(i64::MIN, -9_223_372_036_854_775_808.0),
            Some(Ordering::Equal)
        );
        // i64::MAX rounds to 2^63 as an f64; exact comparison still says less.
        assert_eq!(
            cmp_int_float(i64::MAX, i64::MAX as f64),
            Some(Ordering::Less)
        );
        assert_eq!(cmp_int_float(0, f64::NAN), None);
        assert_eq!(cmp_int_float(0, f64::INFINITY), Some(Ordering::Less));
        assert_eq!(cmp_int_float(0, f64::NEG_INFINITY), Some(Ordering::Greater));
    }

    #[test]
    fn depth_limit_is_enforced_without_recursion() {
        let mut deep = Filter::eq("a", Value::Null);
        for _ in 0..MAX_FILTER_DEPTH - 1 {
            deep = Filter::Not(Box::new(deep));
        }
        assert_eq!(validate(&deep), Ok(()));
        let too_deep = Filter::Or(vec![deep]);
        assert_eq!(validate(&too_deep), Err(IqdbError::InvalidFilter));
    }
}
