//! Loading machine profiles: the built-in ones (embedded with `include_str!`) and
//! user files, with errors that name the field and, for TOML, the line.
//!
//! A profile is accepted only if (1) it parses into [`MachineModel`] with no missing or
//! unknown fields, (2) every parameter's `source` carries a tag (see [`check_source`]),
//! and (3) [`MachineModel::validate`] finds nothing wrong. Nothing read from the file is
//! ever `unwrap`ped: every failure becomes a [`ProfileError`].

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::model::MachineModel;

/// Built-in profiles: name and TOML text. `v1` is the published chip; `v2-whatif` is a
/// clearly labelled what-if for the newer chip.
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("v1", include_str!("../../profiles/v1.toml")),
    ("v2-whatif", include_str!("../../profiles/v2-whatif.toml")),
];

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `chip.clock_hz` or `chip.clock_hz.source`.
    pub field: String,
    /// 1-based line in the profile text, when the field (or its table) can be located.
    pub line: Option<usize>,
    pub reason: String,
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read machine profile {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or does not have the shape of a profile (missing, unknown
    /// or mistyped field).
    #[error("{}: {}{message}", Loc(origin, *line, *column), field_prefix(field))]
    Syntax {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        /// The field the error is about, when it can be told.
        field: Option<String>,
        message: String,
    },
    /// The text parses but some fields are wrong (untagged source, out of range,
    /// inconsistent with another field).
    #[error("{}", InvalidList(origin, issues))]
    Invalid {
        origin: String,
        issues: Vec<FieldError>,
    },
    #[error("unknown built-in machine profile `{name}` (known: {})", builtin_names().join(", "))]
    UnknownBuiltin { name: String },
}

impl ProfileError {
    /// Every field this error is about (empty for I/O errors and unknown built-ins).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ProfileError::Syntax { field, .. } => field.iter().map(String::as_str).collect(),
            ProfileError::Invalid { issues, .. } => {
                issues.iter().map(|i| i.field.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The first line this error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ProfileError::Syntax { line, .. } => *line,
            ProfileError::Invalid { issues, .. } => issues.iter().find_map(|i| i.line),
            _ => None,
        }
    }
}

struct Loc<'a>(&'a str, Option<usize>, Option<usize>);

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if let Some(line) = self.1 {
            write!(f, ":{line}")?;
            if let Some(col) = self.2 {
                write!(f, ":{col}")?;
            }
        }
        Ok(())
    }
}

fn field_prefix(field: &Option<String>) -> String {
    match field {
        Some(f) => format!("field `{f}`: "),
        None => String::new(),
    }
}

struct InvalidList<'a>(&'a str, &'a [FieldError]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}: invalid field `{}`: {}",
                Loc(self.0, issue.line, None),
                issue.field,
                issue.reason
            )?;
        }
        Ok(())
    }
}

/// Names of the built-in profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN_PROFILES.iter().map(|(n, _)| *n).collect()
}

/// The MACHINE.md source tags a parameter may start with.
const TAG_LETTERS: &[char] = &['P', 'R', 'S', 'U', 'D'];

/// Check one `source` string. `in_free` is true for parameters under `[free]`.
///
/// Why so strict: the model's numbers are only as good as their provenance, and an
/// untagged number is how a guess turns into a "fact" three commits later.
pub fn check_source(source: &str, in_free: bool) -> Result<(), String> {
    let s = source.trim();
    if in_free {
        return match s.strip_prefix("free:") {
            Some(rest) if !rest.trim().is_empty() => Ok(()),
            _ => Err(format!(
                "a free parameter's source must be `free:` followed by how it was set, found {source:?}"
            )),
        };
    }
    if s.starts_with("free:") {
        return Err(
            "`free:` is reserved for the [free] table (at most three free parameters)".into(),
        );
    }
    if let Some(rest) = s.strip_prefix("assumption:") {
        return if rest.trim().is_empty() {
            Err("`assumption:` must be followed by a reason".into())
        } else {
            Ok(())
        };
    }
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let tag = &rest[..end];
            let ok = !tag.is_empty()
                && tag
                    .split('/')
                    .all(|t| t.len() == 1 && t.chars().all(|c| TAG_LETTERS.contains(&c)));
            let cited = !rest[end + 1..].trim().is_empty();
            if ok && cited {
                return Ok(());
            }
            if ok {
                return Err(format!("tag [{tag}] must be followed by a citation"));
            }
        }
    }
    Err(format!(
        "source must start with a tag ([P], [R], [S], [U], [D] or a combination like [S/U]) and a citation, or with `assumption:` and a reason; found {source:?}"
    ))
}

impl MachineModel {
    /// The published GroqChip v1 profile (`targets/profiles/v1.toml`).
    pub fn v1() -> MachineModel {
        // The text is compiled in and loaded by a unit test, so this cannot fail at run time.
        MachineModel::builtin("v1").expect("built-in profile v1 is valid (checked by tests)")
    }

    /// A built-in profile by name (`v1`, `v2-whatif`).
    pub fn builtin(name: &str) -> Result<MachineModel, ProfileError> {
        let (n, text) = BUILTIN_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::UnknownBuiltin {
                name: name.to_string(),
            })?;
        MachineModel::from_toml_str(text, &format!("<builtin {n}>"))
    }

    /// Load a profile from a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<MachineModel, ProfileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        MachineModel::from_toml_str(&text, &path.display().to_string())
    }

    /// Parse, tag-check and validate a profile. `origin` names the text in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<MachineModel, ProfileError> {
        let model: MachineModel =
            toml::from_str(text).map_err(|e| syntax_error(text, origin, &e))?;
        let mut issues = Vec::new();
        for row in model.params() {
            let in_free = row.path.starts_with("free.");
            if let Err(reason) = check_source(&row.source, in_free) {
                issues.push(FieldError {
                    line: line_of_path(text, &format!("{}.source", row.path)),
                    field: format!("{}.source", row.path),
                    reason,
                });
            }
        }
        for issue in model.validate() {
            issues.push(FieldError {
                line: line_of_path(text, &issue.field),
                field: issue.field,
                reason: issue.reason,
            });
        }
        if issues.is_empty() {
            Ok(model)
        } else {
            Err(ProfileError::Invalid {
                origin: origin.to_string(),
                issues,
            })
        }
    }

    /// The profile as TOML (the same shape `from_toml_str` reads, without comments).
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    /// Every parameter as (dotted path, value, source), in file order; claims are
    /// listed as `claims[i]`. Used by the source check and by the report.
    pub fn params(&self) -> Vec<ParamRow> {
        let mut rows = Vec::new();
        // Serializing our own struct to a TOML value cannot fail (no maps with non-string
        // keys, no NaN-sensitive types); if it ever did, the report would simply be empty
        // and the tag check would be skipped, so fail loudly in debug builds instead.
        match toml::Value::try_from(self) {
            Ok(v) => collect_params(&v, "", &mut rows),
            Err(e) => debug_assert!(false, "machine model does not serialize: {e}"),
        }
        rows
    }
}

/// One parameter for display: where it is, its value (formatted), and its source.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamRow {
    pub path: String,
    pub value: String,
    pub source: String,
}

fn collect_params(v: &toml::Value, prefix: &str, out: &mut Vec<ParamRow>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        toml::Value::Table(t) => {
            if let (
                Some(toml::Value::String(what)),
                Some(value),
                Some(toml::Value::String(source)),
            ) = (t.get("what"), t.get("value"), t.get("source"))
            {
                // A claim: a published headline number the model does not consume.
                out.push(ParamRow {
                    path: format!("{prefix} ({what})"),
                    value: format_value(value),
                    source: source.clone(),
                });
                return;
            }
            if let (Some(value), Some(toml::Value::String(source))) =
                (t.get("value"), t.get("source"))
            {
                out.push(ParamRow {
                    path: prefix.to_string(),
                    value: format_value(value),
                    source: source.clone(),
                });
                return;
            }
            for (k, child) in t {
                collect_params(child, &join(k), out);
            }
        }
        toml::Value::Array(items) if prefix == "claims" => {
            for (i, item) in items.iter().enumerate() {
                collect_params(item, &format!("claims[{i}]"), out);
            }
        }
        // Plain keys ([profile] name, title, ...) are metadata, not parameters.
        _ => {}
    }
}

/// Human formatting: integers with thousands separators, slice groups as `MEM×44`.
pub(crate) fn format_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(i) => group_thousands(*i),
        toml::Value::Float(f) => format_float(*f),
        toml::Value::String(s) => s.clone(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Table(t) => match (t.get("kind"), t.get("count")) {
                    (Some(toml::Value::String(k)), Some(toml::Value::Integer(c))) => {
                        format!("{}×{c}", k.to_uppercase())
                    }
                    _ => format_value(item),
                },
                other => format_value(other),
            })
            .collect::<Vec<_>>()
            .join(", "),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| format!("{k}={}", format_value(v)))
            .collect::<Vec<_>>()
            .join(" "),
        toml::Value::Datetime(d) => d.to_string(),
    }
}

pub(crate) fn group_thousands(i: i64) -> String {
    let digits = i.unsigned_abs().to_string();
    let mut out = String::new();
    for (n, c) in digits.chars().enumerate() {
        if n > 0 && (digits.len() - n) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if i < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub(crate) fn format_float(f: f64) -> String {
    if f != 0.0 && (f.abs() >= 1e6 || f.abs() < 1e-3) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

// ---- locating fields in the text ----------------------------------------------------

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ProfileError {
    let span = e.span();
    let (line, column) = match &span {
        Some(r) => {
            let (l, c) = line_col(text, r.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    // toml puts "expected ..." on a second line; keep the error to one line.
    let message = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    // Where in the document the error is: the deepest key whose key or value contains it.
    let at = span.as_ref().and_then(|r| path_at(text, r));
    // serde names missing/unknown fields in backticks; qualify them with the table.
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    let field = match (named, at) {
        // An unknown key's span is the key itself, so `at` may already end with it.
        (Some(name), Some(at)) if at == name || at.ends_with(&format!(".{name}")) => Some(at),
        (Some(name), Some(table)) if !table.is_empty() => Some(format!("{table}.{name}")),
        (Some(name), _) => Some(name.to_string()),
        (None, Some(path)) if !path.is_empty() => Some(path),
        _ => None,
    };
    ProfileError::Syntax {
        origin: origin.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// The dotted path of the deepest key (or table) whose span contains `span.start`.
fn path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    walk_table(doc.as_table(), span.start, &mut path);
    Some(path.join("."))
}

fn contains(r: Option<Range<usize>>, at: usize) -> bool {
    r.is_some_and(|r| r.start <= at && at < r.end.max(r.start + 1))
}

fn walk_table(t: &toml_edit::Table, at: usize, path: &mut Vec<String>) -> bool {
    for (k, item) in t.iter() {
        let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
        let hit = match item {
            toml_edit::Item::Table(sub) => {
                path.push(k.to_string());
                if walk_table(sub, at, path) || contains(sub.span(), at) {
                    return true;
                }
                path.pop();
                false
            }
            toml_edit::Item::Value(v) => {
                if contains(key_span.clone(), at) || contains(v.span(), at) {
                    path.push(k.to_string());
                    if let Some(inline) = v.as_inline_table() {
                        walk_inline(inline, at, path);
                    }
                    true
                } else {
                    false
                }
            }
            toml_edit::Item::ArrayOfTables(arr) => {
                for (i, sub) in arr.iter().enumerate() {
                    path.push(format!("{k}[{i}]"));
                    if walk_table(sub, at, path) || contains(sub.span(), at) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            toml_edit::Item::None => false,
        };
        if hit {
            return true;
        }
    }
    false
}

fn walk_inline(t: &toml_edit::InlineTable, at: usize, path: &mut Vec<String>) {
    for (k, v) in t.iter() {
        let key_span = t.get_key_value(k).and_then(|(key, _)| key.span());
        if contains(key_span, at) || contains(v.span(), at) {
            path.push(k.to_string());
            if let Some(inner) = v.as_inline_table() {
                walk_inline(inner, at, path);
            }
            return;
        }
    }
}

/// The line of a dotted field path (`chip.clock_hz.source`), or of its deepest existing
/// ancestor, in the profile text.
fn line_of_path(text: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut item: Option<&toml_edit::Item> = Some(doc.as_item());
    let mut inline: Option<&toml_edit::InlineTable> = None;
    for seg in dotted.split('.') {
        if let Some(t) = inline {
            let Some((key, v)) = t.get_key_value(seg) else {
                break;
            };
            if let Some(s) = key.span() {
                best = Some(s.start);
            }
            inline = v.as_value().and_then(|v| v.as_inline_table());
            continue;
        }
        let Some(current) = item else { break };
        let Some(table) = current.as_table() else {
            break;
        };
        let Some((key, next)) = table.get_key_value(seg) else {
            break;
        };
        if let Some(s) = key
            .span()
            .or_else(|| next.as_table().and_then(|t| t.span()))
        {
            best = Some(s.start);
        }
        inline = next.as_value().and_then(|v| v.as_inline_table());
        item = if inline.is_some() { None } else { Some(next) };
    }
    best.map(|off| line_col(text, off).0)
}
