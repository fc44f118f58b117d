//! Chat-template rendering: turn a conversation into the prompt text the
//! model was trained on, using the model's own Jinja `tokenizer.chat_template`.
//!
//! The template runs in MiniJinja configured like Hugging Face's
//! `apply_chat_template` (and llama.cpp's `--jinja` mode): `trim_blocks` and
//! `lstrip_blocks` on, loop controls (`break`/`continue`) enabled, Python
//! string/dict methods (`.strip()`, `.startswith()`, `.items()` ...) available,
//! and the globals `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, `raise_exception(msg)` and `strftime_now(fmt)`.
//!
//! Invariants: rendering is a pure function of the template, the messages,
//! `add_generation_prompt` and the clock (only `strftime_now` reads it, and
//! [`ChatTemplate::with_fixed_time`] pins it); a model without a template is
//! an error ([`ChatError::NoTemplate`]), never a silent guess — the caller
//! decides whether to fall back to [`chatml_fallback`].
//!
//! Templates come from model files, so they are bounded like untrusted code: a render has
//! [`TEMPLATE_FUEL`] (minijinja's budget of instructions and created data), a recursion
//! limit of [`TEMPLATE_RECURSION`], and its output may be at most [`MAX_PROMPT_BYTES`]; a
//! template that loops forever or doubles a string is an error, not a hang or an abort.
//!
//! The rendered text contains special-token *text* (e.g. `<|im_start|>`):
//! tokenize it with `parse_special = true`, and with `add_special = false`
//! when the template already writes BOS itself.

use minijinja::{Environment, Error, ErrorKind, Value};

use crate::tokenizer::Tokenizer;

/// minijinja fuel per render: about one unit per instruction and per 64 bytes of data a
/// template creates, so this bounds a render to ~4 M instructions and ~256 MB of strings.
/// Real chat templates (SmolLM2's, Llama 3's, Qwen's) use a few hundred units per message.
pub const TEMPLATE_FUEL: u64 = 4_000_000;

/// Nesting depth (loops, ifs, macro calls) a template may reach.
pub const TEMPLATE_RECURSION: usize = 100;

/// The most prompt text a template may render: far more than any context holds (16 MiB is
/// millions of tokens); only a runaway template gets near it.
pub const MAX_PROMPT_BYTES: usize = 16 << 20;

/// A writer that refuses to grow past a limit, remembering that it did.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
    overflowed: &'a std::cell::Cell<bool>,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.max {
            self.overflowed.set(true);
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"` (templates may accept others).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(
        "the model has no chat template (tokenizer.chat_template is missing); \
         use chat::chatml_fallback() explicitly if ChatML is right for it"
    )]
    NoTemplate,
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    #[error("chat template failed: {0}")]
    Render(String),
}

/// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n` per message).
pub const CHATML_TEMPLATE: &str =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
     message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ \
     '<|im_start|>assistant\\n' }}{% endif %}";

/// A compiled chat template plus the special-token strings it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    fixed_time: Option<i64>,
}

/// The ChatML template, for models whose GGUF has no `tokenizer.chat_template`.
///
/// Only a fallback: a model trained on another format will see a prompt
/// format it does not know. `bos_token`/`eos_token` are empty.
pub fn chatml_fallback() -> ChatTemplate {
    // CHATML_TEMPLATE is a constant known to compile (see the tests).
    ChatTemplate::new(CHATML_TEMPLATE, "", "").unwrap_or_else(|_| ChatTemplate::empty())
}

/// Render `messages` with the tokenizer's own template.
pub fn apply_chat_template(
    tok: &Tokenizer,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    ChatTemplate::from_tokenizer(tok)?.render(messages, add_generation_prompt)
}

fn render_error(e: Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl ChatTemplate {
    /// Compile `source`; `bos_token`/`eos_token` are the strings the template
    /// sees under those names.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(render_error(e)))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatError::Syntax(render_error(e)))?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            fixed_time: None,
        })
    }

    fn empty() -> Self {
        Self {
            env: Environment::new(),
            bos_token: String::new(),
            eos_token: String::new(),
            fixed_time: None,
        }
    }

    /// The template stored in the tokenizer's GGUF, with its BOS/EOS texts.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self, ChatError> {
        let src = tok.chat_template().ok_or(ChatError::NoTemplate)?;
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
        Self::new(src, &text(tok.bos()), &text(tok.eos()))
    }

    /// Make `strftime_now` report this Unix time (seconds, UTC) instead of
    /// the clock, for reproducible prompts.
    pub fn with_fixed_time(mut self, unix_seconds: i64) -> Self {
        self.fixed_time = Some(unix_seconds);
        self
    }

    /// Render the conversation; `add_generation_prompt` appends the opening
    /// of an assistant turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Render(render_error(e)))?;
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut map = std::collections::BTreeMap::new();
                map.insert("role".to_string(), Value::from(m.role.as_str()));
                map.insert("content".to_string(), Value::from(m.content.as_str()));
                Value::from(map)
            })
            .collect();
        let now = self.fixed_time.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let strftime_now = Value::from_function(move |fmt: String| -> Result<String, Error> {
            Ok(strftime(&fmt, now))
        });
        let ctx = minijinja::context! {
            messages => Value::from(msgs),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            strftime_now => strftime_now,
        };
        let mut out = Vec::new();
        let overflowed = std::cell::Cell::new(false);
        let w = Bounded {
            out: &mut out,
            max: MAX_PROMPT_BYTES,
            overflowed: &overflowed,
        };
        match tmpl.render_captured_to(ctx, w) {
            Ok(_) => {}
            Err(_) if overflowed.get() => {
                return Err(ChatError::Render(format!(
                    "the rendered prompt exceeds {MAX_PROMPT_BYTES} bytes (the template's \
                     output grows without bound)"
                )))
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(ChatError::Render(format!(
                    "the template did more work than its budget of {TEMPLATE_FUEL} steps \
                     allows (a loop that does not end, or data that grows without bound)"
                )))
            }
            Err(e) => return Err(ChatError::Render(render_error(e))),
        }
        String::from_utf8(out).map_err(|e| ChatError::Render(format!("output is not UTF-8: {e}")))
    }
}

/// Days since 1970-01-01 -> (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A small `strftime` (UTC) covering what chat templates use.
fn strftime(fmt: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let month = MONTHS[(m as usize + 11) % 12];
    let wday = DAYS[days.rem_euclid(7) as usize];
    // day of the year, 1-based
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let yday: i64 = (1..m)
        .map(|mi| match mi {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        })
        .sum::<i64>()
        + i64::from(d);
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('A') => out.push_str(wday),
            Some('a') => out.push_str(&wday[..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hh + 11) % 12 + 1)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('F') => out.push_str(&format!("{y}-{m:02}-{d:02}")),
            Some('T') => out.push_str(&format!("{hh:02}:{mm:02}:{ss:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> Result<String, ChatError> {
        ChatTemplate::new(src, "", "")?.render(&[ChatMessage::user("hi")], true)
    }

    #[test]
    fn nested_loops_run_out_of_fuel() {
        let e = render(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(e.to_string().contains("budget"), "{e}");
    }

    #[test]
    fn string_doubling_is_bounded() {
        let e = render(
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("budget") || m.contains("exceeds"), "{m}");
        let e = render("{{ 'x' * 100000000000 }}").unwrap_err();
        assert!(e.to_string().contains("chat template"), "{e}");
    }

    #[test]
    fn deep_recursion_is_an_error() {
        let e = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap_err();
        assert!(e.to_string().contains("chat template"), "{e}");
    }

    #[test]
    fn chatml_still_renders_within_limits() {
        let msgs: Vec<ChatMessage> = (0..2000)
            .map(|i| ChatMessage::user(format!("message {i}")))
            .collect();
        let t = chatml_fallback().render(&msgs, true).unwrap();
        assert!(t.ends_with("<|im_start|>assistant\n"));
    }

    #[test]
    fn strftime_formats() {
        // 2024-07-26 13:25:09 UTC, a Friday, day 208
        let t = 1_722_000_309;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e %j %H:%M:%S %I%p %y %%", t),
            "Friday July 26 208 13:25:09 01PM 24 %"
        );
        assert_eq!(strftime("%F %T", 0), "1970-01-01 00:00:00");
        assert_eq!(strftime("%Y-%m-%d %a", 951_782_400), "2000-02-29 Tue");
    }
}
