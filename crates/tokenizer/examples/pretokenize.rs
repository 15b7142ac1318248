//! Shows how each pre-tokenizer splits a text into words (before any BPE merge).
//!
//! `cargo run -p grist-tokenizer --example pretokenize -- "Hello world's 12345!"`

use grist_tokenizer::PreTokenizer;

fn main() {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Hi  there, it's 2024!\n\n".into());
    println!("text: {text:?}");
    for pre in [
        PreTokenizer::Default,
        PreTokenizer::Gpt2,
        PreTokenizer::Llama3,
        PreTokenizer::Qwen2,
        PreTokenizer::Starcoder,
        PreTokenizer::DeepseekLlm,
        PreTokenizer::DeepseekCoder,
        PreTokenizer::Falcon,
    ] {
        let words: Vec<&str> = pre.split(&text).into_iter().map(|r| &text[r]).collect();
        println!("{pre:?}: {words:?}");
    }
}
