"""musicnn (MTT_musicnn) as a TF2 SavedModel: 16 kHz waveform -> 200-d penultimate features.

The network is musicnn's own graph code (tf.compat.v1 layers) traced with
`tf.compat.v1.wrap_function` and filled from the package's TF1 checkpoint, so
the TF2 SavedModel computes exactly what the TF1 graph does. The front end is
in the graph: log-compressed mel spectrogram as musicnn's extractor computes
it with librosa (n_fft 512, hop 256, 96 Slaney mel bands, power 2, centred
frames, log10(10000 x + 1)), in float32 (the extractor's float16 overflows).
A clip is cut into 187-frame (3 s) patches, repeated if shorter, and the
features are averaged over patches.
"""

import importlib.util
import os

import numpy as np
import tensorflow as tf

PACKAGE = "musicnn"
MODEL = "MTT_musicnn"
NUM_TAGS = 50
DIM = 200
SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH_FRAMES = 187


def checkpoint_prefix() -> str:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'musicnn' package is not installed: run `make setup`")
    return os.path.join(list(spec.submodule_search_locations)[0], MODEL) + "/"


def _hz_to_mel(hz):
    """Slaney mel scale (librosa's default, htk=False)."""
    hz = np.asarray(hz, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """[1 + n_fft // 2, n_mels] Slaney-normalised triangular filters, as librosa.filters.mel."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros([n_mels, len(fft_freqs)])
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.T.astype(np.float32)


def log_mel(waveform: tf.Tensor, filterbank: tf.Tensor) -> tf.Tensor:
    """float32 mono 16 kHz [samples] -> [frames, 96], frames = 1 + samples // 256."""
    padded = tf.pad(waveform, [[N_FFT // 2, N_FFT // 2]])  # centred frames, zero padding (librosa >= 0.10)
    spectrum = tf.signal.stft(padded, frame_length=N_FFT, frame_step=HOP, fft_length=N_FFT, window_fn=tf.signal.hann_window)
    power = tf.math.square(tf.abs(spectrum))
    return tf.math.log(10000.0 * tf.matmul(power, filterbank) + 1.0) / tf.math.log(10.0)


def patches(mel: tf.Tensor) -> tf.Tensor:
    """[frames, 96] -> [n, 187, 96] non-overlapping patches; a short clip is repeated to fill one."""
    frames = tf.shape(mel)[0]
    repeats = (PATCH_FRAMES + frames - 1) // frames
    mel = tf.tile(mel, [repeats, 1])
    count = tf.shape(mel)[0] // PATCH_FRAMES
    return tf.reshape(mel[: count * PATCH_FRAMES], [count, PATCH_FRAMES, N_MELS])


def _graph(mel_patches):
    from musicnn import models

    logits, *_, penultimate = models.define_model(mel_patches, False, MODEL, NUM_TAGS)
    return {"taggram": tf.sigmoid(logits), "penultimate": penultimate}


class MusicnnEncoder(tf.Module):
    """Waveforms (16 kHz mono float32) -> 200-d musicnn features; `tags` gives the 50 MTT tag scores."""

    def __init__(self):
        super().__init__(name="musicnn_mtt")
        self.network = tf.compat.v1.wrap_function(_graph, [tf.TensorSpec([None, PATCH_FRAMES, N_MELS], tf.float32)])
        reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix())
        for variable in self.network.variables:
            variable.assign(reader.get_tensor(variable.name.split(":")[0]))
        self.network_variables = list(self.network.variables)
        self.filterbank = tf.constant(mel_filterbank())

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH_FRAMES, N_MELS], tf.float32, name="mel_patches")])
    def embed_patches(self, mel_patches):
        return self.network(mel_patches)

    def _clip(self, waveform):
        out = self.network(patches(log_mel(waveform, self.filterbank)))
        return tf.concat([tf.reduce_mean(out["penultimate"], 0), tf.reduce_mean(out["taggram"], 0)], 0)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms")])
    def __call__(self, waveforms):
        """[batch, samples] (one clip per row, same length) -> [batch, 200]."""
        both = tf.map_fn(self._clip, waveforms, fn_output_signature=tf.TensorSpec([DIM + NUM_TAGS], tf.float32))
        return both[:, :DIM]

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms"), tf.TensorSpec([None], tf.int64, name="lengths")]
    )
    def embed_clips(self, waveforms, lengths):
        """Clips of different lengths in one call: [batch, samples] zero-padded after each clip, each clip's
        length [batch] -> [batch, 200], what __call__ gives for each clip alone. The network runs once over the
        patches of every clip together (where __call__ runs it clip by clip), which is what batching buys here."""
        batch = tf.shape(waveforms)[0]
        clips = tf.TensorArray(tf.float32, size=batch, infer_shape=False, element_shape=tf.TensorShape([None, PATCH_FRAMES, N_MELS]))
        counts = tf.TensorArray(tf.int32, size=batch)
        for i in tf.range(batch):
            clip = patches(log_mel(waveforms[i, : tf.cast(lengths[i], tf.int32)], self.filterbank))
            clips = clips.write(i, clip)
            counts = counts.write(i, tf.shape(clip)[0])
        out = self.network(clips.concat())
        return tf.math.segment_mean(out["penultimate"], tf.repeat(tf.range(batch), counts.stack()))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveforms")])
    def tags(self, waveforms):
        """[batch, samples] -> [batch, 50] mean MTT tag probabilities."""
        both = tf.map_fn(self._clip, waveforms, fn_output_signature=tf.TensorSpec([DIM + NUM_TAGS], tf.float32))
        return both[:, DIM:]


def build() -> MusicnnEncoder:
    return MusicnnEncoder()
