//! The `where` clause: parsed with sqlparser, checked against the layer's fields, evaluated on
//! features in memory or written as SQL with bound parameters (never by concatenating values).
//!
//! Supported: comparisons (`=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`), `AND`, `OR`, `NOT`,
//! parentheses, `IN (…)`, `LIKE` (`%`, `_`; case-sensitive), `IS [NOT] NULL`,
//! `[NOT] BETWEEN … AND …`, `DATE '…'` and `TIMESTAMP '…'` literals, `UPPER(field)` and
//! `LOWER(field)`. Anything else is an error.
//!
//! Bounded for hostile input ([`WhereLimits`]): the text's length, its number of tokens and its
//! nesting are checked on the tokens before anything is parsed; chains of `AND` and `OR` become
//! one node with many operands (walked iteratively), so every walk of a parsed clause is as deep
//! as its nesting, never as long as it is.

use std::cmp::Ordering;

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, UnaryOperator,
    Value as SqlValue,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use super::value::{Value, format_date_ms, parse_date_ms};
use koop_provider::FieldType;

/// A field the `where` clause may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhereField {
    /// Its name, as in the data.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
}

/// A column of the `where` clause, resolved against the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The field's name, as in the data.
    pub name: String,
    /// Its type.
    pub field_type: FieldType,
    /// `UPPER(…)` or `LOWER(…)` around it.
    pub case: Case,
}

/// A case function around a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// As is.
    Unchanged,
    /// `UPPER(field)`.
    Upper,
    /// `LOWER(field)`.
    Lower,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A field.
    Column(Column),
    /// A constant.
    Literal(Value),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>`, `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CompareOp {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::NotEq => "<>",
            Self::Lt => "<",
            Self::LtEq => "<=",
            Self::Gt => ">",
            Self::GtEq => ">=",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Eq => ordering == Ordering::Equal,
            Self::NotEq => ordering != Ordering::Equal,
            Self::Lt => ordering == Ordering::Less,
            Self::LtEq => ordering != Ordering::Greater,
            Self::Gt => ordering == Ordering::Greater,
            Self::GtEq => ordering != Ordering::Less,
        }
    }
}

/// How large a `where` clause may be. Past a limit the clause is refused before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhereLimits {
    /// Longest clause, in bytes (default 64 KiB).
    pub max_bytes: usize,
    /// Most tokens (names, values, operators, parentheses; default 8,192: an `IN` list of some
    /// 4,000 values).
    pub max_tokens: usize,
    /// Deepest nesting of parentheses and `NOT` (default 32).
    pub max_depth: usize,
}

impl Default for WhereLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_tokens: 8192,
            max_depth: 32,
        }
    }
}

/// A parsed, checked `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// A constant (`1=1`, `1=0`).
    Constant(bool),
    /// `a AND b AND …`: every operand holds.
    And(Vec<Predicate>),
    /// `a OR b OR …`: some operand holds.
    Or(Vec<Predicate>),
    /// `NOT a`
    Not(Box<Predicate>),
    /// `a op b`
    Compare {
        /// Left side.
        left: Operand,
        /// Operator.
        op: CompareOp,
        /// Right side.
        right: Operand,
    },
    /// `a [NOT] IN (…)`
    In {
        /// The tested operand.
        operand: Operand,
        /// The values.
        values: Vec<Value>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `a [NOT] LIKE 'pattern'`
    Like {
        /// The tested operand.
        operand: Operand,
        /// The pattern (`%`, `_`).
        pattern: String,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `a IS [NOT] NULL`
    IsNull {
        /// The tested operand.
        operand: Operand,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `a [NOT] BETWEEN low AND high`
    Between {
        /// The tested operand.
        operand: Operand,
        /// Lower bound.
        low: Value,
        /// Upper bound.
        high: Value,
        /// `NOT BETWEEN`.
        negated: bool,
    },
}

/// A parameter bound to the SQL of a predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
}

fn literal(expr: &Expr) -> Result<Value, String> {
    match expr {
        Expr::Value(value) => match &value.value {
            SqlValue::Number(number, _) => number
                .parse::<f64>()
                .map(Value::Number)
                .map_err(|_| format!("{number} is not a number")),
            SqlValue::SingleQuotedString(text) => Ok(Value::Text(text.clone())),
            SqlValue::Null => Ok(Value::Null),
            SqlValue::Boolean(flag) => Ok(Value::Number(f64::from(u8::from(*flag)))),
            other => Err(format!("unsupported value {other}")),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Value::Number(number) => Ok(Value::Number(-number)),
            _ => Err("only numbers can be negated".to_owned()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal(expr),
        Expr::TypedString(typed) => {
            let SqlValue::SingleQuotedString(text) = &typed.value.value else {
                return Err("a date literal needs a quoted string".to_owned());
            };
            match typed.data_type {
                DataType::Date | DataType::Timestamp(..) | DataType::Datetime(_) => {
                    parse_date_ms(text)
                        .map(Value::Date)
                        .ok_or_else(|| format!("{text:?} is not a date"))
                }
                _ => Err(format!("unsupported literal {expr}")),
            }
        }
        Expr::Nested(inner) => literal(inner),
        _ => Err(format!("{expr} is not a value")),
    }
}

/// `number` as an `i64` when it is a whole number that `f64` holds exactly.
pub(crate) fn exact_integer(number: f64) -> Option<i64> {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked: whole and within ±2^53, where f64 is exact"
    )]
    (number.fract() == 0.0 && number.abs() <= 9_007_199_254_740_992.0).then_some(number as i64)
}

/// A literal number of epoch milliseconds as a date.
fn whole_ms(ms: f64) -> Result<i64, String> {
    exact_integer(ms.trunc()).ok_or_else(|| format!("{ms} is not a date in epoch milliseconds"))
}

/// Coerces a literal to the type of the column it is compared with.
fn coerce(value: Value, field_type: FieldType) -> Result<Value, String> {
    Ok(match (value, field_type) {
        (Value::Text(text), FieldType::Date) => {
            Value::Date(parse_date_ms(&text).ok_or_else(|| format!("{text:?} is not a date"))?)
        }
        (Value::Number(ms), FieldType::Date) => Value::Date(whole_ms(ms)?),
        (Value::Text(text), FieldType::Integer | FieldType::Double) => Value::Number(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a number"))?,
        ),
        (Value::Number(number), FieldType::String) => Value::Text(number.to_string()),
        (Value::Date(ms), FieldType::String) => Value::Text(format_date_ms(ms)),
        (value, _) => value,
    })
}

struct Resolver<'a> {
    fields: &'a [WhereField],
}

impl Resolver<'_> {
    fn column(&self, name: &str, case: Case) -> Result<Column, String> {
        let field = self
            .fields
            .iter()
            .find(|field| field.name == name)
            .or_else(|| {
                self.fields
                    .iter()
                    .find(|field| field.name.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| format!("there is no field {name:?}"))?;
        if case != Case::Unchanged && field.field_type != FieldType::String {
            return Err(format!(
                "UPPER and LOWER apply to text fields, not {name:?}"
            ));
        }
        Ok(Column {
            name: field.name.clone(),
            field_type: field.field_type,
            case,
        })
    }

    fn operand(&self, expr: &Expr) -> Result<Operand, String> {
        match expr {
            Expr::Identifier(ident) => {
                Ok(Operand::Column(self.column(&ident.value, Case::Unchanged)?))
            }
            Expr::CompoundIdentifier(parts) => {
                let last = parts.last().ok_or("an empty name")?;
                Ok(Operand::Column(self.column(&last.value, Case::Unchanged)?))
            }
            Expr::Nested(inner) => self.operand(inner),
            Expr::Function(function) => {
                let name = function.name.to_string().to_ascii_uppercase();
                let case = match name.as_str() {
                    "UPPER" => Case::Upper,
                    "LOWER" => Case::Lower,
                    _ => {
                        return Err(format!(
                            "the function {name} is not supported (UPPER and LOWER are)"
                        ));
                    }
                };
                let FunctionArguments::List(list) = &function.args else {
                    return Err(format!("{name} takes one field"));
                };
                match list.args.as_slice() {
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(ident)))] => {
                        Ok(Operand::Column(self.column(&ident.value, case)?))
                    }
                    _ => Err(format!("{name} takes one field")),
                }
            }
            other => literal(other).map(Operand::Literal),
        }
    }

    /// The operand, with a literal coerced to the type of `other` when `other` is a column.
    fn operands(&self, left: &Expr, right: &Expr) -> Result<(Operand, Operand), String> {
        let (left, right) = (self.operand(left)?, self.operand(right)?);
        Ok(match (left, right) {
            (Operand::Column(column), Operand::Literal(value)) => {
                let value = coerce(value, column.field_type)?;
                (Operand::Column(column), Operand::Literal(value))
            }
            (Operand::Literal(value), Operand::Column(column)) => {
                let value = coerce(value, column.field_type)?;
                (Operand::Literal(value), Operand::Column(column))
            }
            pair => pair,
        })
    }

    fn values_for(operand: &Operand, exprs: &[Expr]) -> Result<Vec<Value>, String> {
        exprs
            .iter()
            .map(|expr| {
                let value = literal(expr)?;
                match operand {
                    Operand::Column(column) => coerce(value, column.field_type),
                    Operand::Literal(_) => Ok(value),
                }
            })
            .collect()
    }

    /// The operands of a chain of `op` (`a AND b AND c` is `(a AND b) AND c` to sqlparser),
    /// collected without recursing along the chain.
    fn chain<'e>(expr: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
        let mut operands = Vec::new();
        let mut pending = vec![expr];
        while let Some(next) = pending.pop() {
            match next {
                Expr::BinaryOp {
                    left,
                    op: inner,
                    right,
                } if inner == op => {
                    // Right first on the stack: operands come out left to right.
                    pending.push(right);
                    pending.push(left);
                }
                other => operands.push(other),
            }
        }
        operands
    }

    /// `left op right`; two literals make a constant (`1=1`).
    fn comparison(&self, left: &Expr, op: CompareOp, right: &Expr) -> Result<Predicate, String> {
        let (left, right) = self.operands(left, right)?;
        if let (Operand::Literal(a), Operand::Literal(b)) = (&left, &right) {
            return Ok(Predicate::Constant(
                a.compare(b).is_some_and(|ordering| op.holds(ordering)),
            ));
        }
        Ok(Predicate::Compare { left, op, right })
    }

    fn predicate(&self, expr: &Expr) -> Result<Predicate, String> {
        Ok(match expr {
            Expr::Nested(inner) => self.predicate(inner)?,
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    let operands = Self::chain(expr, op)
                        .into_iter()
                        .map(|operand| self.predicate(operand))
                        .collect::<Result<Vec<_>, _>>()?;
                    if *op == BinaryOperator::And {
                        Predicate::And(operands)
                    } else {
                        Predicate::Or(operands)
                    }
                }
                BinaryOperator::Eq => self.comparison(left, CompareOp::Eq, right)?,
                BinaryOperator::NotEq => self.comparison(left, CompareOp::NotEq, right)?,
                BinaryOperator::Lt => self.comparison(left, CompareOp::Lt, right)?,
                BinaryOperator::LtEq => self.comparison(left, CompareOp::LtEq, right)?,
                BinaryOperator::Gt => self.comparison(left, CompareOp::Gt, right)?,
                BinaryOperator::GtEq => self.comparison(left, CompareOp::GtEq, right)?,
                other => return Err(format!("the operator {other} is not supported")),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Predicate::Not(Box::new(self.predicate(expr)?)),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let operand = self.operand(expr)?;
                let values = Self::values_for(&operand, list)?;
                Predicate::In {
                    operand,
                    values,
                    negated: *negated,
                }
            }
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let operand = self.operand(expr)?;
                let Value::Text(pattern) = literal(pattern)? else {
                    return Err("LIKE needs a quoted pattern".to_owned());
                };
                Predicate::Like {
                    operand,
                    pattern,
                    negated: *negated,
                }
            }
            Expr::IsNull(expr) => Predicate::IsNull {
                operand: self.operand(expr)?,
                negated: false,
            },
            Expr::IsNotNull(expr) => Predicate::IsNull {
                operand: self.operand(expr)?,
                negated: true,
            },
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let operand = self.operand(expr)?;
                let mut bounds = Self::values_for(&operand, &[(**low).clone(), (**high).clone()])?;
                let high = bounds.pop().unwrap_or(Value::Null);
                let low = bounds.pop().unwrap_or(Value::Null);
                Predicate::Between {
                    operand,
                    low,
                    high,
                    negated: *negated,
                }
            }
            Expr::Value(_) => match literal(expr)? {
                Value::Number(number) => Predicate::Constant(number != 0.0),
                _ => return Err(format!("{expr} is not a condition")),
            },
            other => return Err(format!("{other} is not a supported condition")),
        })
    }
}

impl Predicate {
    /// Parses a `where` clause against `fields` within the default [`WhereLimits`]. An empty
    /// clause, or `1=1`, is `Constant(true)`.
    ///
    /// # Errors
    ///
    /// What is wrong, for `Invalid "where" parameter` errors: a syntax error, an unknown field,
    /// an unsupported construct, a value that does not fit its field, a limit passed.
    pub fn parse(clause: &str, fields: &[WhereField]) -> Result<Self, String> {
        Self::parse_within(clause, fields, &WhereLimits::default())
    }

    /// Parses a `where` clause against `fields` within `limits`, checked on its tokens before
    /// anything is parsed.
    ///
    /// # Errors
    ///
    /// As [`Predicate::parse`]; a limit passed is named with its value.
    pub fn parse_within(
        clause: &str,
        fields: &[WhereField],
        limits: &WhereLimits,
    ) -> Result<Self, String> {
        Self::parse_checked(clause, fields, limits)
            .map_err(|error| super::params::shortened(&error, 300))
    }

    fn parse_checked(
        clause: &str,
        fields: &[WhereField],
        limits: &WhereLimits,
    ) -> Result<Self, String> {
        if clause.trim().is_empty() {
            return Ok(Self::Constant(true));
        }
        if clause.len() > limits.max_bytes {
            return Err(format!(
                "the clause is {} bytes long; this server accepts at most {} bytes",
                clause.len(),
                limits.max_bytes
            ));
        }
        let dialect = GenericDialect {};
        let tokens = sqlparser::tokenizer::Tokenizer::new(&dialect, clause)
            .tokenize()
            .map_err(|error| error.to_string())?;
        check_tokens(&tokens, limits)?;
        let mut parser = Parser::new(&dialect)
            .with_recursion_limit(limits.max_depth.saturating_mul(2).max(8))
            .with_tokens(tokens);
        let expr = parser.parse_expr().map_err(|error| error.to_string())?;
        let rest = parser.peek_token();
        if rest.token != sqlparser::tokenizer::Token::EOF {
            return Err(format!("unexpected {} after the condition", rest.token));
        }
        Resolver { fields }.predicate(&expr)
    }

    /// `true` when the predicate keeps every feature.
    pub fn is_always_true(&self) -> bool {
        matches!(self, Self::Constant(true))
    }

    /// Evaluates the predicate with `attribute` giving each column's value (SQL three-valued
    /// logic: `None` is "unknown", which a `WHERE` does not keep).
    pub fn eval(&self, attribute: &dyn Fn(&Column) -> Value) -> Option<bool> {
        let value = |operand: &Operand| -> Value {
            match operand {
                Operand::Literal(value) => value.clone(),
                Operand::Column(column) => match (attribute(column), column.case) {
                    (Value::Text(text), Case::Upper) => Value::Text(text.to_uppercase()),
                    (Value::Text(text), Case::Lower) => Value::Text(text.to_lowercase()),
                    (value, _) => value,
                },
            }
        };
        match self {
            Self::Constant(flag) => Some(*flag),
            Self::And(operands) => {
                // SQL's three-valued AND: false wins, then unknown.
                let mut unknown = false;
                for operand in operands {
                    match operand.eval(attribute) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Self::Or(operands) => {
                let mut unknown = false;
                for operand in operands {
                    match operand.eval(attribute) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Self::Not(a) => a.eval(attribute).map(|flag| !flag),
            Self::Compare { left, op, right } => value(left)
                .compare(&value(right))
                .map(|ordering| op.holds(ordering)),
            Self::In {
                operand,
                values,
                negated,
            } => {
                let tested = value(operand);
                if tested == Value::Null {
                    return None;
                }
                let found = values
                    .iter()
                    .any(|candidate| tested.compare(candidate) == Some(Ordering::Equal));
                Some(found != *negated)
            }
            Self::Like {
                operand,
                pattern,
                negated,
            } => match value(operand) {
                Value::Text(text) => Some(like(&text, pattern) != *negated),
                Value::Null => None,
                Value::Number(number) => Some(like(&number.to_string(), pattern) != *negated),
                Value::Date(ms) => Some(like(&format_date_ms(ms), pattern) != *negated),
            },
            Self::IsNull { operand, negated } => Some((value(operand) == Value::Null) != *negated),
            Self::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let tested = value(operand);
                let inside = tested.compare(low)? != Ordering::Less
                    && tested.compare(high)? != Ordering::Greater;
                Some(inside != *negated)
            }
        }
    }

    /// The predicate as SQLite SQL with `?` parameters, with `column` giving each column's SQL
    /// (a quoted name); `None` when a column has no SQL (the predicate must then be evaluated
    /// in memory). Dates are compared with `julianday`; `LIKE` becomes a case-sensitive `GLOB`.
    pub fn to_sql(
        &self,
        column: &dyn Fn(&Column) -> Option<String>,
    ) -> Option<(String, Vec<SqlParam>)> {
        let mut params = Vec::new();
        let sql = self.sql(column, &mut params)?;
        Some((sql, params))
    }

    fn sql(
        &self,
        column: &dyn Fn(&Column) -> Option<String>,
        params: &mut Vec<SqlParam>,
    ) -> Option<String> {
        let operand = |operand: &Operand, params: &mut Vec<SqlParam>| -> Option<(String, bool)> {
            match operand {
                Operand::Column(col) => {
                    let name = column(col)?;
                    let sql = match col.case {
                        Case::Unchanged => name,
                        Case::Upper => format!("upper({name})"),
                        Case::Lower => format!("lower({name})"),
                    };
                    Some(if col.field_type == FieldType::Date {
                        (format!("julianday({sql})"), true)
                    } else {
                        (sql, false)
                    })
                }
                Operand::Literal(value) => Some(bind(value, params)),
            }
        };
        Some(match self {
            Self::Constant(flag) => if *flag { "1" } else { "0" }.to_owned(),
            Self::And(operands) | Self::Or(operands) => {
                let joiner = if matches!(self, Self::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts = operands
                    .iter()
                    .map(|operand| operand.sql(column, params).map(|sql| format!("({sql})")))
                    .collect::<Option<Vec<_>>>()?;
                parts.join(joiner)
            }
            Self::Not(a) => format!("NOT ({})", a.sql(column, params)?),
            Self::Compare { left, op, right } => {
                let (left, _) = operand(left, params)?;
                let (right, _) = operand(right, params)?;
                format!("{left} {} {right}", op.sql())
            }
            Self::In {
                operand: tested,
                values,
                negated,
            } => {
                let (tested, _) = operand(tested, params)?;
                let list: Vec<String> = values.iter().map(|value| bind(value, params).0).collect();
                format!(
                    "{tested} {}IN ({})",
                    if *negated { "NOT " } else { "" },
                    list.join(", ")
                )
            }
            Self::Like {
                operand: tested,
                pattern,
                negated,
            } => {
                let (tested, _) = operand(tested, params)?;
                params.push(SqlParam::Text(glob_of_like(pattern)));
                format!("{}{tested} GLOB ?", if *negated { "NOT " } else { "" })
            }
            Self::IsNull {
                operand: tested,
                negated,
            } => {
                let (tested, _) = operand(tested, params)?;
                format!("{tested} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            Self::Between {
                operand: tested,
                low,
                high,
                negated,
            } => {
                let (tested, _) = operand(tested, params)?;
                let (low, _) = bind(low, params);
                let (high, _) = bind(high, params);
                format!(
                    "{tested} {}BETWEEN {low} AND {high}",
                    if *negated { "NOT " } else { "" }
                )
            }
        })
    }
}

/// Checks a clause's tokens against `limits`: how many there are (whitespace aside), and how
/// deep parentheses and `NOT` nest.
fn check_tokens(
    tokens: &[sqlparser::tokenizer::Token],
    limits: &WhereLimits,
) -> Result<(), String> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::Token;
    let mut count = 0_usize;
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let mut nots = 0_usize;
    for token in tokens {
        match token {
            Token::Whitespace(_) => continue,
            Token::LParen => {
                depth += 1;
                nots = 0;
            }
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(word) if word.keyword == Keyword::NOT => nots += 1,
            _ => nots = 0,
        }
        count += 1;
        deepest = deepest.max(depth + nots);
        if count > limits.max_tokens {
            return Err(format!(
                "the clause has more than {} terms; this server accepts at most {}",
                limits.max_tokens, limits.max_tokens
            ));
        }
        if deepest > limits.max_depth {
            return Err(format!(
                "the clause nests deeper than {} levels; this server accepts at most {}",
                limits.max_depth, limits.max_depth
            ));
        }
    }
    Ok(())
}

/// Binds a literal: its SQL placeholder, and whether it is a date.
fn bind(value: &Value, params: &mut Vec<SqlParam>) -> (String, bool) {
    match value {
        Value::Null => ("NULL".to_owned(), false),
        Value::Number(number) => {
            if let Some(integer) = exact_integer(*number) {
                params.push(SqlParam::Integer(integer));
            } else {
                params.push(SqlParam::Real(*number));
            }
            ("?".to_owned(), false)
        }
        Value::Text(text) => {
            params.push(SqlParam::Text(text.clone()));
            ("?".to_owned(), false)
        }
        Value::Date(ms) => {
            params.push(SqlParam::Text(format_date_ms(*ms)));
            ("julianday(?)".to_owned(), true)
        }
    }
}

/// A SQL `LIKE` pattern as a SQLite `GLOB` pattern (case-sensitive, like standardized queries).
fn glob_of_like(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '%' => glob.push('*'),
            '_' => glob.push('?'),
            '*' => glob.push_str("[*]"),
            '?' => glob.push_str("[?]"),
            '[' => glob.push_str("[[]"),
            other => glob.push(other),
        }
    }
    glob
}

/// SQL `LIKE` matching: `%` any run, `_` one character; case-sensitive.
pub fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Iterative matcher with backtracking to the last `%`.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == '%' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<WhereField> {
        vec![
            WhereField {
                name: "name".into(),
                field_type: FieldType::String,
            },
            WhereField {
                name: "population".into(),
                field_type: FieldType::Integer,
            },
            WhereField {
                name: "surveyed".into(),
                field_type: FieldType::Date,
            },
        ]
    }

    fn row(
        name: &str,
        population: Option<f64>,
        surveyed: Option<&str>,
    ) -> impl Fn(&Column) -> Value {
        let (name, surveyed) = (name.to_owned(), surveyed.map(str::to_owned));
        move |column: &Column| match column.name.as_str() {
            "name" => Value::Text(name.clone()),
            "population" => population.map_or(Value::Null, Value::Number),
            _ => surveyed
                .as_deref()
                .and_then(parse_date_ms)
                .map_or(Value::Null, Value::Date),
        }
    }

    fn keeps(clause: &str, attribute: &dyn Fn(&Column) -> Value) -> bool {
        Predicate::parse(clause, &fields())
            .expect(clause)
            .eval(attribute)
            == Some(true)
    }

    #[test]
    fn the_supported_grammar_evaluates() {
        let auckland = row(
            "Auckland",
            Some(1_693_000.0),
            Some("2023-03-07T00:00:00.000Z"),
        );
        let dunedin = row("Dunedin", Some(134_100.0), None);
        assert!(keeps("1=1", &dunedin));
        assert!(!keeps("1=0", &dunedin));
        assert!(keeps("population > 200000", &auckland) && !keeps("population > 200000", &dunedin));
        assert!(keeps(
            "name = 'Auckland' AND NOT (population < 5)",
            &auckland
        ));
        assert!(keeps("name IN ('Dunedin', 'Hamilton')", &dunedin));
        assert!(keeps("name LIKE 'D%n'", &dunedin) && !keeps("name LIKE 'd%'", &dunedin));
        assert!(keeps("UPPER(name) LIKE 'D%'", &dunedin));
        assert!(keeps("surveyed IS NULL", &dunedin) && keeps("surveyed IS NOT NULL", &auckland));
        assert!(keeps("surveyed > DATE '2020-01-01'", &auckland));
        assert!(keeps(
            "surveyed >= TIMESTAMP '2023-03-07 00:00:00'",
            &auckland
        ));
        assert!(
            !keeps("surveyed > DATE '2020-01-01'", &dunedin),
            "NULL is unknown, not kept"
        );
        assert!(
            !keeps("NOT (surveyed > DATE '2020-01-01')", &dunedin),
            "NOT unknown is unknown"
        );
        assert!(keeps("population BETWEEN 100000 AND 200000", &dunedin));
        assert!(keeps("population NOT BETWEEN 100000 AND 200000", &auckland));
        assert!(
            keeps("Population = 134100", &dunedin),
            "field names are case-insensitive"
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        for bad in [
            "foo bar baz",
            "missing = 1",
            "population > 'many'",
            "name = 'a'; DROP TABLE x",
            "LENGTH(name) > 3",
            "population + 1 > 3",
            "name LIKE 'a' ESCAPE '!'",
            "(SELECT 1) = 1",
        ] {
            assert!(Predicate::parse(bad, &fields()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sql_binds_every_value() {
        let predicate = Predicate::parse(
            "name LIKE 'O''B%' AND (population IN (1, 2.5) OR surveyed < DATE '2020-01-01')",
            &fields(),
        )
        .expect("valid");
        let (sql, params) = predicate
            .to_sql(&|column| Some(format!("\"{}\"", column.name)))
            .expect("SQL");
        assert_eq!(
            sql,
            "(\"name\" GLOB ?) AND ((\"population\" IN (?, ?)) OR (julianday(\"surveyed\") < julianday(?)))"
        );
        assert_eq!(
            params,
            [
                SqlParam::Text("O'B*".into()),
                SqlParam::Integer(1),
                SqlParam::Real(2.5),
                SqlParam::Text("2020-01-01T00:00:00.000Z".into())
            ]
        );
        assert!(
            !sql.contains("O'B"),
            "values are never written into the SQL"
        );
        assert!(predicate.to_sql(&|_| None).is_none());
    }

    #[test]
    fn hostile_clauses_are_refused_by_their_limits_and_long_chains_stay_shallow() {
        let flat = vec!["1=1"; 4000].join(" AND ");
        let error = Predicate::parse(&flat, &fields()).expect_err("too many terms");
        assert!(error.contains("at most 8192"), "{error}");
        let deep = format!("{}1=1{}", "(".repeat(5000), ")".repeat(5000));
        let error = Predicate::parse(&deep, &fields()).expect_err("too deep");
        assert!(error.contains("deeper than 32"), "{error}");
        let nots = format!("{}population > 1", "NOT ".repeat(200));
        assert!(Predicate::parse(&nots, &fields()).is_err());
        let long = format!("name = '{}'", "x".repeat(70_000));
        let error = Predicate::parse(&long, &fields()).expect_err("too long");
        assert!(error.contains("at most 65536 bytes"), "{error}");
        // 1,500 terms are within the limits: one node with 1,500 operands, evaluated and written
        // as SQL without recursing along the chain.
        let chain = vec!["population > 1"; 1500].join(" OR ");
        let predicate = Predicate::parse(&chain, &fields()).expect("within the limits");
        let Predicate::Or(operands) = &predicate else {
            panic!("one OR node: {predicate:?}");
        };
        assert_eq!(operands.len(), 1500);
        let dunedin = row("Dunedin", Some(134_100.0), None);
        assert_eq!(predicate.eval(&dunedin), Some(true));
        let (sql, params) = predicate
            .to_sql(&|column| Some(format!("\"{}\"", column.name)))
            .expect("SQL");
        assert_eq!(params.len(), 1500);
        assert!(
            sql.starts_with("(\"population\" > ?) OR "),
            "{}",
            &sql[..40]
        );
    }

    #[test]
    fn like_matches_sql_semantics() {
        assert!(like("Wellington", "W%"));
        assert!(like("Wellington", "%ing%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("", "%"));
        assert!(like("a%b", "a%b"));
        assert!(!like("Auckland", "auck%"));
    }
}
