//! Chat templates: SmolLM2's own template (expected strings produced by
//! Python's jinja2 configured like Hugging Face's `apply_chat_template`),
//! a hand-written template exercising the Jinja features HF templates use,
//! and the error paths.

#[path = "tokenizer_common.rs"]
mod common;

use common::smollm2;
use lpuc_runtime::chat::{
    apply_chat_template, chatml_fallback, ChatError, ChatMessage, ChatTemplate,
};
use lpuc_runtime::tokenizer::{token_type, Tokenizer, VocabData};

#[test]
fn smollm2_template_adds_default_system_prompt() {
    let Some(tok) = smollm2() else { return };
    let got = apply_chat_template(tok, &[ChatMessage::user("Hi")], true).expect("renders");
    assert_eq!(
        got,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // The rendered prompt tokenizes to single special tokens.
    let ids = tok.encode(&got, false, true);
    let im_start = tok.token_id("<|im_start|>").expect("<|im_start|>");
    let im_end = tok.token_id("<|im_end|>").expect("<|im_end|>");
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&i| i == im_start).count(), 3);
    assert_eq!(ids.iter().filter(|&&i| i == im_end).count(), 2);
    assert_eq!(tok.decode(&ids), got);
}

#[test]
fn smollm2_template_with_system_and_history() {
    let Some(tok) = smollm2() else { return };
    let msgs = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
    ];
    let want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
                <|im_start|>assistant\nHello!<|im_end|>\n";
    assert_eq!(
        apply_chat_template(tok, &msgs, false).expect("renders"),
        want
    );
    // ChatML fallback agrees with SmolLM2's template once a system prompt is given.
    assert_eq!(
        chatml_fallback().render(&msgs, false).expect("renders"),
        want
    );
}

const HAND: &str = "{{ bos_token }}{% for m in messages %}
  {% if m.role == 'system' %}{% continue %}{% endif %}
  {% if loop.index > 4 %}{% break %}{% endif %}
[{{ m.role | upper }}] {{ m.content.strip() }}{% if m.content.startswith('!') %}{{ raise_exception('no bangs') }}{% endif %}

{% endfor %}
{% if add_generation_prompt %}[ASSISTANT]{{ eos_token }} {% endif %}{{ strftime_now('%d %b %Y') }}
";

#[test]
fn hand_written_template_matches_jinja2() {
    let t = ChatTemplate::new(HAND, "<s>", "</s>")
        .expect("compiles")
        .with_fixed_time(1_722_000_309);
    let msgs = [
        ChatMessage::system("sys"),
        ChatMessage::user("  hi  "),
        ChatMessage::assistant("yo"),
        ChatMessage::user("a"),
        ChatMessage::user("b"),
    ];
    assert_eq!(
        t.render(&msgs, true).expect("renders"),
        "<s>[USER] hi\n[ASSISTANT] yo\n[USER] a\n[ASSISTANT]</s> 26 Jul 2024"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let t = ChatTemplate::new(HAND, "", "").expect("compiles");
    let err = t
        .render(&[ChatMessage::user("!boom")], false)
        .expect_err("raises");
    assert!(
        matches!(&err, ChatError::Render(m) if m.contains("no bangs")),
        "{err}"
    );
}

#[test]
fn syntax_errors_are_reported() {
    let err = ChatTemplate::new("{% for m in messages %}", "", "").expect_err("unclosed for");
    assert!(matches!(err, ChatError::Syntax(_)), "{err}");
}

#[test]
fn missing_template_is_an_explicit_error() {
    let tok = Tokenizer::new(VocabData {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "▁a".into()],
        token_types: vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
            token_type::NORMAL,
        ],
        ..Default::default()
    })
    .expect("vocab");
    let err = apply_chat_template(&tok, &[ChatMessage::user("a")], true).expect_err("no template");
    assert!(matches!(err, ChatError::NoTemplate));
    assert!(err.to_string().contains("chatml_fallback"));
    // A template in the vocabulary sees the vocabulary's BOS/EOS texts.
    let tok = Tokenizer::new(VocabData {
        model: "llama".into(),
        tokens: vec!["<unk>".into(), "<s>".into(), "</s>".into(), "▁a".into()],
        chat_template: Some("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}".into()),
        ..Default::default()
    })
    .expect("vocab");
    assert_eq!(
        apply_chat_template(&tok, &[ChatMessage::user("a")], true).expect("renders"),
        "<s>a</s>"
    );
}

#[test]
fn chatml_fallback_generation_prompt() {
    let got = chatml_fallback()
        .render(&[ChatMessage::user("Hi")], true)
        .expect("renders");
    assert_eq!(
        got,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}
