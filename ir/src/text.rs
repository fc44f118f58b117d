//! The text form (`.ir`): printer and parser.
//!
//! ```text
//! graph "tiny" {
//!   sym B <= 1
//!   sym P <= 64
//!   sym S <= 64
//!   weights random(seed = 7)
//!   state "blk.0.k" : f32[B, 2, P, 16]
//!   %0 = input "tokens" : i32[B, S]
//!   %1 = weight "token_embd.weight" : q8_0[256, 64]
//!   %2 = tensor.embedding(%1, %0) : f32[B, S, 64]
//!   %3 = tensor.rms_norm(%2) {eps = 0.00001} : f32[B, S, 64]
//!   ...
//!   %9 = output "logits"(%8) : f32[B, 1, 256]
//! }
//! ```
//!
//! Invariants: `print(parse(t)) == t` for every printed `t` (the canonical form); values are
//! numbered by the printer in topological order (ties by creation order), so removing a node
//! renumbers only what follows it. The parser accepts more than the printer emits — any value
//! names (`%x`), forward references, `//` comments — and reports the first error with its
//! `line:col`; it never panics.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::dtype::DType;
use crate::graph::{Graph, Loc, Node, StateDecl, Value, WeightSource};
use crate::op::{Attr, Op};
use crate::types::{Dim, Sym, TensorType};

// ---------------------------------------------------------------------------------------
// Printer

/// Quotes a string for the text form.
pub fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{{{:x}}}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The canonical text of a graph.
pub fn print(g: &Graph) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "graph {} {{", quote(&g.name));
    for s in Sym::ALL {
        match g.syms.bound(s) {
            Some(b) => {
                let _ = writeln!(o, "  sym {} <= {}", s.name(), b);
            }
            None => {
                let _ = writeln!(o, "  sym {}", s.name());
            }
        }
    }
    match &g.weights {
        WeightSource::None => o.push_str("  weights none\n"),
        WeightSource::Random { seed } => {
            let _ = writeln!(o, "  weights random(seed = {seed})");
        }
        WeightSource::Gguf { path } => {
            let _ = writeln!(o, "  weights gguf({})", quote(path));
        }
    }
    for st in &g.states {
        let _ = writeln!(o, "  state {} : {}", quote(&st.name), st.ty);
    }
    let num = g.numbering();
    let mut order: Vec<Value> = g.values();
    order.sort_by_key(|v| num[v]);
    for v in order {
        print_node(&mut o, g, v, &num);
    }
    o.push_str("}\n");
    o
}

fn print_node(o: &mut String, g: &Graph, v: Value, num: &HashMap<Value, usize>) {
    let n = g.node(v);
    let _ = write!(o, "  %{} = {}", num[&v], n.op.name());
    if let Some(l) = n.op.label() {
        let _ = write!(o, " {}", quote(l));
    }
    let ops = g.operands(v);
    if !ops.is_empty() {
        o.push('(');
        for (i, a) in ops.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            let _ = write!(o, "%{}", num[a]);
        }
        o.push(')');
    }
    let mut attrs: Vec<(String, Attr)> =
        n.op.attrs()
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect();
    attrs.extend(n.annot.iter().map(|(k, a)| (k.clone(), a.clone())));
    if !attrs.is_empty() {
        o.push_str(" {");
        for (i, (k, a)) in attrs.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            let _ = write!(o, "{k} = {a}");
        }
        o.push('}');
    }
    let _ = writeln!(o, " : {}", n.ty);
}

/// Prints one node in the context of its graph (for error messages and debugging).
pub fn print_value(g: &Graph, v: Value) -> String {
    let num = g.numbering();
    let mut o = String::new();
    print_node(&mut o, g, v, &num);
    o.trim().to_string()
}

// ---------------------------------------------------------------------------------------
// Diagnostics

/// An error located in a source text. `Display` is `file:line:col: message`.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{col}: {message}")]
pub struct SourceError {
    pub message: String,
    pub file: String,
    pub line: usize,
    pub col: usize,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: SourceSpan,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl SourceError {
    pub fn new(
        src: &str,
        file: &str,
        offset: usize,
        len: usize,
        message: impl Into<String>,
    ) -> SourceError {
        let offset = offset.min(src.len());
        let (line, col) = line_col(src, offset);
        let message = message.into();
        SourceError {
            label: message.clone(),
            message,
            file: file.to_string(),
            line,
            col,
            src: NamedSource::new(file, src.to_string()),
            span: SourceSpan::new(offset.into(), len.min(src.len() - offset)),
            help: None,
        }
    }

    pub fn with_help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Val(String),
    Punct(&'static str),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(x) => format!("`{x}`"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Val(s) => format!("`%{s}`"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Spanned {
    tok: Tok,
    off: usize,
    len: usize,
}

fn lex(src: &str) -> Result<Vec<Spanned>, (usize, usize, String)> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_string())
        } else if c == b'%' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            if i == start + 1 {
                return Err((start, 1, "expected a value name after `%`".into()));
            }
            Tok::Val(src[start + 1..i].to_string())
        } else if c.is_ascii_digit() {
            let mut is_float = false;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                is_float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    is_float = true;
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            if is_float {
                match text.parse::<f64>() {
                    Ok(x) => Tok::Float(x),
                    Err(_) => return Err((start, i - start, format!("bad number `{text}`"))),
                }
            } else {
                match text.parse::<i64>() {
                    Ok(x) => Tok::Int(x),
                    Err(_) => {
                        return Err((start, i - start, format!("integer `{text}` is too large")))
                    }
                }
            }
        } else if c == b'"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return Err((start, i - start, "unterminated string".into()));
                };
                match ch {
                    '"' => {
                        i += 1;
                        break;
                    }
                    '\n' => {
                        return Err((
                            start,
                            i - start,
                            "unterminated string (newline inside quotes)".into(),
                        ))
                    }
                    '\\' => {
                        let esc = src[i + 1..].chars().next();
                        match esc {
                            Some('"') => s.push('"'),
                            Some('\\') => s.push('\\'),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('u') => {
                                let rest = &src[i + 2..];
                                let end = rest.find('}');
                                let parsed = (rest.starts_with('{'))
                                    .then_some(end)
                                    .flatten()
                                    .and_then(|e| {
                                        u32::from_str_radix(&rest[1..e], 16).ok().map(|v| (v, e))
                                    })
                                    .and_then(|(v, e)| char::from_u32(v).map(|c| (c, e)));
                                match parsed {
                                    Some((c, e)) => {
                                        s.push(c);
                                        i += 2 + e + 1;
                                        continue;
                                    }
                                    None => return Err((i, 2, "bad `\\u{...}` escape".into())),
                                }
                            }
                            _ => return Err((i, 2, "unknown escape in string".into())),
                        }
                        i += 2;
                    }
                    ch => {
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            Tok::Str(s)
        } else {
            let two = src.get(i..i + 2);
            if two == Some("<=") {
                i += 2;
                Tok::Punct("<=")
            } else {
                let p = match c {
                    b'{' => "{",
                    b'}' => "}",
                    b'(' => "(",
                    b')' => ")",
                    b'[' => "[",
                    b']' => "]",
                    b',' => ",",
                    b':' => ":",
                    b'=' => "=",
                    b'*' => "*",
                    b'+' => "+",
                    b'-' => "-",
                    _ => {
                        let ch = src[i..].chars().next().unwrap_or('?');
                        return Err((
                            i,
                            ch.len_utf8(),
                            format!("unexpected character `{}`", ch.escape_debug()),
                        ));
                    }
                };
                i += 1;
                Tok::Punct(p)
            }
        };
        out.push(Spanned {
            tok,
            off: start,
            len: i - start,
        });
    }
    out.push(Spanned {
        tok: Tok::Eof,
        off: src.len(),
        len: 0,
    });
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    src: &'a str,
    file: &'a str,
    toks: Vec<Spanned>,
    pos: usize,
}

type PResult<T> = Result<T, Box<SourceError>>;

struct PendingNode {
    name: String,
    name_off: usize,
    name_len: usize,
    op: Op,
    operands: Vec<(String, usize, usize)>,
    annot: BTreeMap<String, Attr>,
    ty: TensorType,
    loc: Loc,
}

impl<'a> Parser<'a> {
    fn err(&self, off: usize, len: usize, msg: impl Into<String>) -> Box<SourceError> {
        Box::new(SourceError::new(self.src, self.file, off, len, msg))
    }

    fn peek(&self) -> &Spanned {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Spanned {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, what: &str) -> Box<SourceError> {
        let t = self.peek();
        self.err(
            t.off,
            t.len.max(1),
            format!("expected {what}, found {}", t.tok.describe()),
        )
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if matches!(&self.peek().tok, Tok::Punct(q) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{p}`")))
        }
    }

    fn expect_keyword(&mut self, k: &str) -> PResult<()> {
        match &self.peek().tok {
            Tok::Ident(s) if s == k => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.unexpected(&format!("`{k}`"))),
        }
    }

    fn expect_str(&mut self, what: &str) -> PResult<String> {
        match self.next() {
            Spanned {
                tok: Tok::Str(s), ..
            } => Ok(s),
            t => Err(self.err(
                t.off,
                t.len.max(1),
                format!(
                    "expected {what} (a quoted string), found {}",
                    t.tok.describe()
                ),
            )),
        }
    }

    fn expect_u64(&mut self, what: &str) -> PResult<u64> {
        match self.next() {
            Spanned {
                tok: Tok::Int(i),
                off,
                len,
            } => u64::try_from(i)
                .map_err(|_| self.err(off, len, format!("{what} must not be negative"))),
            t => Err(self.err(
                t.off,
                t.len.max(1),
                format!("expected {what}, found {}", t.tok.describe()),
            )),
        }
    }

    fn parse_graph(&mut self) -> PResult<Graph> {
        self.expect_keyword("graph")?;
        let name = self.expect_str("the graph name")?;
        self.expect_punct("{")?;
        let mut g = Graph::new(name);
        let mut seen_syms = [false; 3];
        let mut seen_weights = false;
        let mut pending: Vec<PendingNode> = Vec::new();
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Punct("}") => {
                    self.pos += 1;
                    break;
                }
                Tok::Ident(k) if k == "sym" => {
                    self.pos += 1;
                    let st = self.next();
                    let sym = match &st.tok {
                        Tok::Ident(s) => Sym::from_name(s),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        self.err(
                            st.off,
                            st.len.max(1),
                            format!(
                                "expected a symbol `B`, `P` or `S`, found {}",
                                st.tok.describe()
                            ),
                        )
                    })?;
                    if std::mem::replace(&mut seen_syms[sym as usize], true) {
                        return Err(self.err(
                            st.off,
                            st.len,
                            format!("symbol `{}` declared twice", sym.name()),
                        ));
                    }
                    let bound = if self.eat_punct("<=") {
                        Some(self.expect_u64("a bound")?)
                    } else {
                        None
                    };
                    g.syms.set_bound(sym, bound);
                }
                Tok::Ident(k) if k == "weights" => {
                    self.pos += 1;
                    if std::mem::replace(&mut seen_weights, true) {
                        return Err(self.err(t.off, t.len, "`weights` declared twice"));
                    }
                    let kind = self.next();
                    g.weights = match &kind.tok {
                        Tok::Ident(s) if s == "none" => WeightSource::None,
                        Tok::Ident(s) if s == "random" => {
                            self.expect_punct("(")?;
                            self.expect_keyword("seed")?;
                            self.expect_punct("=")?;
                            let seed = self.expect_u64("a seed")?;
                            self.expect_punct(")")?;
                            WeightSource::Random { seed }
                        }
                        Tok::Ident(s) if s == "gguf" => {
                            self.expect_punct("(")?;
                            let path = self.expect_str("a file path")?;
                            self.expect_punct(")")?;
                            WeightSource::Gguf { path }
                        }
                        _ => {
                            return Err(self.err(
                                kind.off,
                                kind.len.max(1),
                                format!(
                                "expected `none`, `random(seed = N)` or `gguf(\"path\")`, found {}",
                                kind.tok.describe()
                            ),
                            ))
                        }
                    };
                }
                Tok::Ident(k) if k == "state" => {
                    self.pos += 1;
                    let nt = self.peek().clone();
                    let name = self.expect_str("the state name")?;
                    if g.state(&name).is_some() {
                        return Err(self.err(
                            nt.off,
                            nt.len,
                            format!("state {} declared twice", quote(&name)),
                        ));
                    }
                    self.expect_punct(":")?;
                    let ty = self.parse_type()?;
                    let end = self.toks[self.pos - 1].off + self.toks[self.pos - 1].len;
                    g.states.push(StateDecl {
                        name,
                        ty,
                        loc: Some(Loc {
                            offset: t.off,
                            len: end - t.off,
                        }),
                    });
                }
                Tok::Val(_) => pending.push(self.parse_node()?),
                Tok::Eof => {
                    return Err(self.err(
                        t.off,
                        0,
                        "unexpected end of file: missing `}` closing the graph",
                    ))
                }
                _ => {
                    return Err(self.unexpected(
                        "`sym`, `weights`, `state`, a value definition `%N = ...` or `}`",
                    ))
                }
            }
        }
        let t = self.peek();
        if t.tok != Tok::Eof {
            return Err(self.err(
                t.off,
                t.len,
                format!("unexpected {} after the graph", t.tok.describe()),
            ));
        }
        // Resolve names (forward references allowed; cycles are the verifier's business).
        let mut ids: HashMap<String, Value> = HashMap::new();
        let mut values = Vec::with_capacity(pending.len());
        for p in &pending {
            if ids.contains_key(&p.name) {
                return Err(self.err(
                    p.name_off,
                    p.name_len,
                    format!("value `%{}` is defined twice", p.name),
                ));
            }
            let mut node = Node::new(p.op.clone(), p.ty.clone());
            node.annot = p.annot.clone();
            node.loc = Some(p.loc);
            let v = g.add_node(node, &[]);
            ids.insert(p.name.clone(), v);
            values.push(v);
        }
        for (p, v) in pending.iter().zip(values) {
            let mut ops = Vec::with_capacity(p.operands.len());
            for (name, off, len) in &p.operands {
                match ids.get(name) {
                    Some(o) => ops.push(*o),
                    None => {
                        return Err(self.err(
                            *off,
                            *len,
                            format!("use of undefined value `%{name}`"),
                        ))
                    }
                }
            }
            g.set_operands(v, &ops);
        }
        Ok(g)
    }

    fn parse_node(&mut self) -> PResult<PendingNode> {
        let start = self.next();
        let Tok::Val(name) = start.tok else {
            unreachable!("caller checked")
        };
        self.expect_punct("=")?;
        let opt = self.next();
        let opname = match &opt.tok {
            Tok::Ident(s) => s.clone(),
            t => {
                return Err(self.err(
                    opt.off,
                    opt.len.max(1),
                    format!("expected an op name, found {}", t.describe()),
                ))
            }
        };
        let label = if let Tok::Str(s) = &self.peek().tok {
            let s = s.clone();
            self.pos += 1;
            Some(s)
        } else {
            None
        };
        let mut operands = Vec::new();
        if self.eat_punct("(") {
            if !self.eat_punct(")") {
                loop {
                    let t = self.next();
                    match t.tok {
                        Tok::Val(v) => operands.push((v, t.off, t.len)),
                        tok => {
                            return Err(self.err(
                                t.off,
                                t.len.max(1),
                                format!("expected an operand `%N`, found {}", tok.describe()),
                            ))
                        }
                    }
                    if self.eat_punct(")") {
                        break;
                    }
                    self.expect_punct(",")?;
                }
            }
        }
        let mut attrs = BTreeMap::new();
        let mut annot = BTreeMap::new();
        if self.eat_punct("{") {
            loop {
                let kt = self.next();
                let key = match kt.tok {
                    Tok::Ident(k) => k,
                    tok => {
                        return Err(self.err(
                            kt.off,
                            kt.len.max(1),
                            format!("expected an attribute name, found {}", tok.describe()),
                        ))
                    }
                };
                self.expect_punct("=")?;
                let val = self.parse_attr()?;
                let dup = if key.contains('.') {
                    annot.insert(key.clone(), val)
                } else {
                    attrs.insert(key.clone(), val)
                };
                if dup.is_some() {
                    return Err(self.err(kt.off, kt.len, format!("attribute `{key}` given twice")));
                }
                if self.eat_punct("}") {
                    break;
                }
                self.expect_punct(",")?;
            }
        }
        let op = Op::from_parts(&opname, label, &mut attrs)
            .map_err(|m| self.err(opt.off, opt.len, m))?;
        if !op.arity().accepts(operands.len()) {
            return Err(self.err(
                opt.off,
                opt.len,
                format!(
                    "`{opname}` takes {} operand(s), found {}",
                    op.arity(),
                    operands.len()
                ),
            ));
        }
        self.expect_punct(":")?;
        let ty = self.parse_type()?;
        let end = self.toks[self.pos - 1].off + self.toks[self.pos - 1].len;
        Ok(PendingNode {
            name,
            name_off: start.off,
            name_len: start.len,
            op,
            operands,
            annot,
            ty,
            loc: Loc {
                offset: start.off,
                len: end - start.off,
            },
        })
    }

    fn parse_attr(&mut self) -> PResult<Attr> {
        let t = self.next();
        Ok(match t.tok {
            Tok::Int(i) => Attr::Int(i),
            Tok::Float(x) => Attr::Float(x as f32),
            Tok::Str(s) => Attr::Str(s),
            Tok::Ident(s) => Attr::Ident(s),
            Tok::Punct("-") => match self.next() {
                Spanned {
                    tok: Tok::Int(i), ..
                } => Attr::Int(-i),
                Spanned {
                    tok: Tok::Float(x), ..
                } => Attr::Float(-x as f32),
                n => {
                    return Err(self.err(
                        n.off,
                        n.len.max(1),
                        format!("expected a number after `-`, found {}", n.tok.describe()),
                    ))
                }
            },
            Tok::Punct("[") => {
                let mut v = Vec::new();
                if !self.eat_punct("]") {
                    loop {
                        let neg = self.eat_punct("-");
                        let e = self.next();
                        match e.tok {
                            Tok::Int(i) => v.push(if neg { -i } else { i }),
                            tok => {
                                return Err(self.err(
                                    e.off,
                                    e.len.max(1),
                                    format!(
                                        "expected an integer in the list, found {}",
                                        tok.describe()
                                    ),
                                ))
                            }
                        }
                        if self.eat_punct("]") {
                            break;
                        }
                        self.expect_punct(",")?;
                    }
                }
                Attr::Ints(v)
            }
            tok => {
                return Err(self.err(
                    t.off,
                    t.len.max(1),
                    format!("expected an attribute value, found {}", tok.describe()),
                ))
            }
        })
    }

    fn parse_type(&mut self) -> PResult<TensorType> {
        let t = self.next();
        let dtype = match &t.tok {
            Tok::Ident(s) => DType::from_name(s).ok_or_else(|| {
                let hint = did_you_mean(s, DType::ALL.iter().map(|d| d.name()))
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
                self.err(t.off, t.len, format!("unknown dtype `{s}`{hint}"))
            })?,
            tok => {
                return Err(self.err(
                    t.off,
                    t.len.max(1),
                    format!(
                        "expected a type like `f32[B, S, 576]`, found {}",
                        tok.describe()
                    ),
                ))
            }
        };
        self.expect_punct("[")?;
        let mut shape = Vec::new();
        if !self.eat_punct("]") {
            loop {
                shape.push(self.parse_dim()?);
                if self.eat_punct("]") {
                    break;
                }
                self.expect_punct(",")?;
            }
        }
        if shape.len() > 8 {
            return Err(self.err(
                t.off,
                t.len,
                format!("rank {} is more than the 8 dims lpuc supports", shape.len()),
            ));
        }
        Ok(TensorType { dtype, shape })
    }

    fn parse_dim(&mut self) -> PResult<Dim> {
        let start = self.peek().off;
        let mut d = Dim::default();
        loop {
            let t = self.next();
            let term = match t.tok {
                Tok::Int(k) => {
                    let k = u64::try_from(k).map_err(|_| self.err(t.off, t.len, "a dimension must not be negative"))?;
                    if self.eat_punct("*") {
                        let st = self.next();
                        let sym = match &st.tok {
                            Tok::Ident(s) => Sym::from_name(s),
                            _ => None,
                        }
                        .ok_or_else(|| self.err(st.off, st.len.max(1), format!("expected a symbol after `*`, found {}", st.tok.describe())))?;
                        Dim::sym(sym).checked_scale(k)
                    } else {
                        Some(Dim::c(k))
                    }
                }
                Tok::Ident(ref s) => match Sym::from_name(s) {
                    Some(sym) => Some(Dim::sym(sym)),
                    None => return Err(self.err(t.off, t.len, format!("unknown dimension `{s}`: dims are integers and the symbols `B`, `P`, `S`"))),
                },
                tok => return Err(self.err(t.off, t.len.max(1), format!("expected a dimension, found {}", tok.describe()))),
            };
            let end = self.toks[self.pos - 1].off + self.toks[self.pos - 1].len;
            d = term
                .and_then(|term| d.checked_add(&term))
                .ok_or_else(|| self.err(start, end - start, "dimension overflows u64"))?;
            if !self.eat_punct("+") {
                return Ok(d);
            }
        }
    }
}

/// Parses the text form. `file` names the source in diagnostics.
pub fn parse(src: &str, file: &str) -> Result<Graph, Box<SourceError>> {
    let toks =
        lex(src).map_err(|(off, len, msg)| Box::new(SourceError::new(src, file, off, len, msg)))?;
    let mut p = Parser {
        src,
        file,
        toks,
        pos: 0,
    };
    p.parse_graph()
}

/// Turns verifier errors into located diagnostics against the text the graph was parsed from.
pub fn locate(g: &Graph, err: &crate::verify::VerifyError, src: &str, file: &str) -> SourceError {
    let loc = match &err.at {
        crate::verify::At::Value(v) if g.contains(*v) => g.node(*v).loc,
        crate::verify::At::State(name) => g.state(name).and_then(|s| s.loc),
        _ => None,
    };
    let (off, len) = loc.map(|l| (l.offset, l.len)).unwrap_or((0, 0));
    SourceError::new(src, file, off, len, err.to_string())
}

/// Parses and verifies; every error comes back located (`file:line:col: ...`).
pub fn parse_and_verify(src: &str, file: &str) -> Result<Graph, Vec<SourceError>> {
    let g = parse(src, file).map_err(|e| vec![*e])?;
    match crate::verify::verify(&g) {
        Ok(()) => Ok(g),
        Err(errs) => Err(errs.0.iter().map(|e| locate(&g, e, src, file)).collect()),
    }
}
