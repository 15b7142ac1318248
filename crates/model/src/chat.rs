//! Chat templates: turn a conversation into the exact prompt text a model was fine-tuned on.
//!
//! GGUF files carry the Hugging Face Jinja template as `tokenizer.chat_template`. grist renders it
//! with [minijinja] configured like Hugging Face's `transformers` (and llama.cpp's `minja`):
//! `trim_blocks` and `lstrip_blocks` on, loop controls (`{% break %}`) enabled, Python string and
//! dict methods (`.strip()`, `.startswith()`, `.items()` …) through `minijinja-contrib`'s
//! `pycompat`, and the globals templates expect: `messages` (a list of `{role, content}` maps),
//! `add_generation_prompt`, `bos_token`, `eos_token` and `raise_exception(msg)`.
//!
//! A model without a template gets a built-in one, and [`ChatTemplate::origin`] says so, so the
//! caller can warn: Gemma-family architectures get the Gemma turn format
//! (`<start_of_turn>user\n…<end_of_turn>\n`, system prompt folded into the first user turn),
//! everything else ChatML (`<|im_start|>role\n…<|im_end|>\n`), llama.cpp's own fallback.

use std::collections::BTreeMap;
use std::fmt;

use grist_gguf::GgufFile;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Where a [`ChatTemplate`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// The model's own `tokenizer.chat_template`.
    Model,
    /// The model has none: built-in ChatML.
    BuiltinChatMl,
    /// The model has none but is a Gemma-family architecture: built-in Gemma format.
    BuiltinGemma,
}

/// What can go wrong loading or rendering a chat template.
#[derive(Debug)]
pub enum ChatError {
    /// The template does not parse.
    Syntax(String),
    /// Rendering failed (including the template's own `raise_exception`).
    Render(String),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Syntax(m) => write!(f, "chat template does not parse: {m}"),
            ChatError::Render(m) => write!(f, "chat template failed: {m}"),
        }
    }
}

impl std::error::Error for ChatError {}

/// Formats a minijinja error on one line (its `Display` plus the innermost cause, if any).
fn one_line(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s.replace('\n', " ")
}

/// ChatML, llama.cpp's fallback for models without a template.
pub const CHATML_TEMPLATE: &str = "\
{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- endif -%}";

/// Gemma's turn format (Gemma 1–3 instruction-tuned models): roles `user` and `model`, no
/// system role (a system prompt is prepended to the first user turn, followed by a blank line),
/// turns must alternate starting with `user`, and contents are trimmed.
pub const GEMMA_TEMPLATE: &str = "\
{{ bos_token }}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] | trim + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}";

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template plus the special-token strings it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    origin: TemplateOrigin,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (Jinja). `bos_token`/`eos_token` are the texts the template sees.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, ChatError> {
        Self::with_origin(source, bos_token, eos_token, TemplateOrigin::Model)
    }

    /// The built-in ChatML template.
    pub fn chatml() -> ChatTemplate {
        Self::with_origin(CHATML_TEMPLATE, "", "", TemplateOrigin::BuiltinChatMl)
            .expect("the built-in ChatML template parses")
    }

    /// The model's template from `tokenizer.chat_template`, or a built-in one when it has none
    /// (check [`origin`](ChatTemplate::origin) to warn the user). `bos_token`/`eos_token` are the
    /// texts of the vocabulary's BOS/EOS ids (empty when the file does not say).
    pub fn from_gguf(gguf: &GgufFile) -> Result<ChatTemplate, ChatError> {
        let token_text = |key: &str| -> String {
            let Ok(id) = gguf.get_u32(key) else {
                return String::new();
            };
            let Ok(tokens) = gguf.get_str_array("tokenizer.ggml.tokens") else {
                return String::new();
            };
            tokens
                .get(id as usize)
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let bos = token_text("tokenizer.ggml.bos_token_id");
        let eos = token_text("tokenizer.ggml.eos_token_id");
        if let Ok(source) = gguf.get_str("tokenizer.chat_template") {
            if !source.trim().is_empty() {
                return Self::with_origin(source, &bos, &eos, TemplateOrigin::Model);
            }
        }
        let arch = gguf.get_str("general.architecture").unwrap_or("");
        if arch.starts_with("gemma") {
            Self::with_origin(GEMMA_TEMPLATE, &bos, &eos, TemplateOrigin::BuiltinGemma)
        } else {
            Self::with_origin(CHATML_TEMPLATE, &bos, &eos, TemplateOrigin::BuiltinChatMl)
        }
    }

    fn with_origin(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        origin: TemplateOrigin,
    ) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with trim_blocks and lstrip_blocks.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(one_line(&e)))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatError::Syntax(one_line(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            origin,
        })
    }

    /// Where this template came from.
    pub fn origin(&self) -> TemplateOrigin {
        self.origin
    }

    /// The BOS text the template sees as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders the conversation exactly as the template writes it. With
    /// `add_generation_prompt` the text ends with the header of an assistant turn, ready for
    /// the model to continue.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                let map: BTreeMap<&str, Value> = BTreeMap::from([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ]);
                Value::from(map)
            })
            .collect();
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(one_line(&e)))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template
            .render(ctx)
            .map_err(|e| ChatError::Render(one_line(&e)))
    }

    /// `text` without a leading BOS text. Templates that write `{{ bos_token }}` would give
    /// two BOS tokens when the tokenizer also adds one; like llama.cpp, strip the template's
    /// copy when the tokenizer adds BOS itself.
    pub fn strip_bos<'a>(&self, text: &'a str) -> &'a str {
        if self.bos_token.is_empty() {
            return text;
        }
        text.strip_prefix(self.bos_token.as_str()).unwrap_or(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "What is 2+2?"),
        ]
    }

    const CHATML_EXPECTED: &str = "<|im_start|>system\nYou are terse.<|im_end|>\n\
        <|im_start|>user\nHi!<|im_end|>\n\
        <|im_start|>assistant\nHello.<|im_end|>\n\
        <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
        <|im_start|>assistant\n";

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::chatml();
        assert_eq!(t.origin(), TemplateOrigin::BuiltinChatMl);
        assert_eq!(t.render(&conversation(), true).unwrap(), CHATML_EXPECTED);
        let no_gen = t.render(&conversation(), false).unwrap();
        assert_eq!(
            no_gen,
            CHATML_EXPECTED
                .strip_suffix("<|im_start|>assistant\n")
                .unwrap()
        );
    }

    #[test]
    fn gemma_builtin_folds_system_into_first_user_turn() {
        let t = ChatTemplate::with_origin(
            GEMMA_TEMPLATE,
            "<bos>",
            "<eos>",
            TemplateOrigin::BuiltinGemma,
        )
        .unwrap();
        let out = t.render(&conversation(), true).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
        assert!(t.strip_bos(&out).starts_with("<start_of_turn>"));
        // Non-alternating roles are the template's own error.
        let bad = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let e = t.render(&bad, true).unwrap_err().to_string();
        assert!(e.contains("must alternate"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn python_methods_trim_blocks_and_raise_exception() {
        let src = "{% for m in messages %}\n  {% if m.content.startswith('x') %}{{ m.content.strip().upper() }}{% endif %}\n{% endfor %}\n{% if not add_generation_prompt %}{{ raise_exception('no gen') }}{% endif %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let msgs = [
            ChatMessage::new("user", "xa "),
            ChatMessage::new("user", "b"),
        ];
        // lstrip_blocks removes the indentation before `{% if`, trim_blocks the newlines after
        // block tags.
        assert_eq!(t.render(&msgs, true).unwrap(), "XA");
        let e = t.render(&msgs, false).unwrap_err();
        assert!(e.to_string().contains("no gen"), "{e}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(e, ChatError::Syntax(_)), "{e}");
    }

    fn real_model(name: &str) -> Option<GgufFile> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(name);
        if !path.exists() {
            eprintln!(
                "SKIPPED: {} not present (run tools/fetch-models)",
                path.display()
            );
            return None;
        }
        Some(GgufFile::open(&path).expect("real model opens"))
    }

    #[test]
    fn smollm2_template() {
        let Some(g) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
            return;
        };
        let t = ChatTemplate::from_gguf(&g).unwrap();
        assert_eq!(t.origin(), TemplateOrigin::Model);
        assert_eq!(t.render(&conversation(), true).unwrap(), CHATML_EXPECTED);
        // Without a system message, SmolLM2's default system prompt appears.
        let out = t.render(&conversation()[1..2], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn qwen2_5_templates() {
        for name in [
            "qwen2.5-coder-0.5b-instruct.gguf",
            "qwen2.5-coder-1.5b-instruct.gguf",
        ] {
            let Some(g) = real_model(name) else { continue };
            let t = ChatTemplate::from_gguf(&g).unwrap();
            assert_eq!(t.origin(), TemplateOrigin::Model);
            assert_eq!(
                t.render(&conversation(), true).unwrap(),
                CHATML_EXPECTED,
                "{name}"
            );
            let out = t.render(&conversation()[1..2], true).unwrap();
            assert_eq!(
                out,
                "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
                 assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
                "{name}"
            );
        }
    }

    #[test]
    fn gemma3_template() {
        let Some(g) = real_model("gemma-3-270m-q4_k_m.gguf") else {
            return;
        };
        let t = ChatTemplate::from_gguf(&g).unwrap();
        // This GGUF ships no chat template: the Gemma built-in applies.
        let expected_origin = if g.get_str("tokenizer.chat_template").is_ok() {
            TemplateOrigin::Model
        } else {
            TemplateOrigin::BuiltinGemma
        };
        assert_eq!(t.origin(), expected_origin);
        assert_eq!(t.bos_token(), "<bos>");
        let out = t.render(&conversation(), true).unwrap();
        assert_eq!(
            t.strip_bos(&out),
            "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nWhat is 2+2?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }
}
