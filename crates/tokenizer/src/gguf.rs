//! Reading `tokenizer.ggml.*` metadata out of a GGUF file into [`VocabMetadata`].

use grist_gguf::GgufFile;

use crate::vocab::{VocabMetadata, SPECIAL_ID_NAMES};
use crate::TokenizerError;

/// Collects every tokenizer key llama.cpp reads; absent optional keys stay `None`.
pub fn read_metadata(file: &GgufFile) -> Result<VocabMetadata, TokenizerError> {
    let err = |e: grist_gguf::GgufError| TokenizerError::BadVocab(e.to_string());
    let has = |key: &str| file.get(key).is_some();
    let model = file
        .get_str("tokenizer.ggml.model")
        .map_err(err)?
        .to_string();
    let pre = if has("tokenizer.ggml.pre") {
        Some(file.get_str("tokenizer.ggml.pre").map_err(err)?.to_string())
    } else {
        None
    };
    let tokens: Vec<String> = file
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(err)?
        .into_iter()
        .map(str::to_string)
        .collect();
    let scores = if has("tokenizer.ggml.scores") {
        Some(
            file.get_array::<f32>("tokenizer.ggml.scores")
                .map_err(err)?,
        )
    } else {
        None
    };
    let token_types = if has("tokenizer.ggml.token_type") {
        Some(
            file.get_array::<i32>("tokenizer.ggml.token_type")
                .map_err(err)?,
        )
    } else {
        None
    };
    let merges = if has("tokenizer.ggml.merges") {
        file.get_str_array("tokenizer.ggml.merges")
            .map_err(err)?
            .into_iter()
            .map(str::to_string)
            .collect()
    } else if model == "gpt2" {
        return Err(TokenizerError::BadVocab(
            "cannot find tokenizer merges (tokenizer.ggml.merges) in a BPE model".into(),
        ));
    } else {
        Vec::new()
    };
    let mut special_ids = std::collections::HashMap::new();
    for name in SPECIAL_ID_NAMES {
        let key = format!("tokenizer.ggml.{name}_token_id");
        if has(&key) {
            special_ids.insert(name.to_string(), file.get_u32(&key).map_err(err)?);
        }
    }
    let opt_bool = |key: &str| -> Result<Option<bool>, TokenizerError> {
        if has(key) {
            Ok(Some(file.get_bool(key).map_err(err)?))
        } else {
            Ok(None)
        }
    };
    Ok(VocabMetadata {
        model,
        pre,
        tokens,
        scores,
        token_types,
        merges,
        special_ids,
        add_bos: opt_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: opt_bool("tokenizer.ggml.add_eos_token")?,
        add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix")?,
        model_name: file.get_str("general.name").ok().map(str::to_string),
    })
}
