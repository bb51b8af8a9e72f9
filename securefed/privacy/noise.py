"""CSPRNG-backed sampling for everything random that touches data or updates.

Opacus' ``secure_mode`` needs ``torchcsprng``, which no longer installs for current
torch. This module replaces it: DP-SGD noise, Poisson sampling of records, cohort
and negative sampling all read a ChaCha20 keystream keyed from the OS CSPRNG
(through an injected :class:`~securefed.randomness.RandomSource`). Nothing here
touches torch's or NumPy's global generators; tensors are built from NumPy arrays.

Key and nonce layout of a :class:`CsprngStream` (all of it fixed by this module):

* master key: 32 bytes read once from the injected ``RandomSource`` (default
  :class:`~securefed.randomness.OsRandom`), used only for the derivation below and
  then dropped;
* stream key: ``HKDF-SHA256(ikm=master, salt=_HKDF_SALT, info=_HKDF_INFO_PREFIX ||
  purpose.value)`` (RFC 5869), 32 bytes. Streams for different
  :class:`StreamPurpose` values therefore use different keys even when their master
  keys coincide (as they do when two streams are built from the same test seed);
* nonce, the 16 bytes ``cryptography``'s ChaCha20 takes: bytes 0-3 the initial
  block counter (little-endian, always 0), bytes 4-11 the segment index
  (unsigned little-endian), bytes 12-15 zero (reserved). A segment is
  ``_SEGMENT_BYTES`` = 2^36 bytes (2^30 blocks) of keystream; the next segment
  starts a fresh encryptor under the next index. This keeps every block counter far
  below 2^32, where ``cryptography`` refuses to go on, so a stream never ends and
  never repeats (distinct (key, nonce, counter) for every block).

Words are read as little-endian unsigned integers on every platform, so a given
seed gives the same numbers everywhere.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import sys
import threading
from collections.abc import Sequence
from enum import Enum
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefed.randomness import OsRandom, RandomSource

__all__ = [
    "CsprngStream",
    "SecureGaussianNoise",
    "StreamPurpose",
    "poisson_sample",
]

_MASTER_KEY_BYTES = 32
"""Bytes read from the RandomSource per stream: a 256-bit ChaCha20 key's worth."""
_HKDF_SALT = b"securefed.privacy.noise"
_HKDF_INFO_PREFIX = b"securefed/csprng-stream/v1/"
"""HKDF labels (protocol name + version); the purpose's value is appended to info."""
_SEGMENT_BYTES = 1 << 36
"""Keystream bytes per nonce segment: 2^30 ChaCha20 blocks, a quarter of the 2^32
blocks a 32-bit counter allows (cryptography raises past that). Cost: one new
encryptor per 64 GiB read."""
_CHUNK_BYTES = 1 << 18
"""Bytes per ``update_into`` call: big enough to amortise the call, small enough to
stay in cache (256 KiB measured fastest of 16 KiB..1 MiB)."""
_ZERO_CHUNK = memoryview(bytes(_CHUNK_BYTES))
"""Plaintext for keystream reads (ChaCha20 of zeros is the keystream)."""
_TWO_POW_M52 = 2.0**-52
_TWO_POW_M53 = 2.0**-53
_TWO_POW_64 = 2.0**64
_MAX_HIGH = 1 << 63
"""Largest exclusive bound :meth:`CsprngStream.integers` accepts (int64 output)."""
_POLAR_ACCEPT = math.pi / 4
"""Acceptance rate of the polar method: the unit disc's share of the square."""
_POLAR_CHUNK_PAIRS = 1 << 14
"""Normal pairs per polar-method batch: bounds the working set to about 1 MiB (batch
sizes from 2^11 to 2^16 measured within 20% of each other)."""
_NOISE_CHUNK = 1 << 16
"""Output elements per batch in :meth:`SecureGaussianNoise.sample` (bounds the
float64 working set to a few MiB, which measured faster than one big batch)."""
_SECURE_DRAWS = 4
"""Gaussian draws summed per noise value: 2n with n = 2, as Opacus' secure mode
(Holohan & Braghin 2021, §5.1); the sum is divided by sqrt(4) = 2."""

_NUMPY_FLOATS: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
}
"""Output dtypes cast in NumPy (round to nearest even, as torch casts)."""

_UIntT = TypeVar("_UIntT", np.uint8, np.uint32, np.uint64)


class StreamPurpose(Enum):
    """What a stream's output is used for; each purpose gets its own derived key.

    The value is part of the HKDF ``info`` label: never change one, add a member.
    """

    GENERAL = "general"
    """One party's stream for all of its uses (reads never overlap, so sharing is safe)."""
    DP_NOISE = "dp-noise"
    """Gaussian noise added to clipped gradients or updates."""
    RECORD_SAMPLING = "record-sampling"
    """Poisson sampling of records or persons for DP-SGD."""
    COHORT_SAMPLING = "cohort-sampling"
    """Choice of the clients that take part in a round."""
    NEGATIVE_SAMPLING = "negative-sampling"
    """Uniform negatives for training."""
    EVALUATION_SAMPLING = "evaluation-sampling"
    """Negatives for sampled evaluation metrics."""
    STOCHASTIC_ROUNDING = "stochastic-rounding"
    """Randomised rounding of real values to a grid."""


def _derive_key(master: bytes, purpose: StreamPurpose) -> bytes:
    """The stream key for ``purpose`` (see the module docstring)."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_HKDF_SALT,
        info=_HKDF_INFO_PREFIX + purpose.value.encode("ascii"),
    )
    return hkdf.derive(master)


def _segment_nonce(segment: int) -> bytes:
    """The 16-byte ChaCha20 nonce of segment ``segment`` (counter 0 || index || 0)."""
    return b"\x00\x00\x00\x00" + segment.to_bytes(8, "little") + b"\x00\x00\x00\x00"


def _count(value: object, name: str) -> int:
    """``value`` as a non-negative int (TypeError for non-integers and bools)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, not a bool")
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer") from None
    if count < 0:
        raise ValueError(f"{name} must be non-negative")
    return count


def _real(value: object, name: str) -> float:
    """``value`` as a Python float (TypeError for non-reals and bools)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number")
    return float(value)


def _probability(value: object, name: str) -> float:
    p = _real(value, name)
    if not 0.0 <= p <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"{name} must be in [0, 1]")
    return p


class CsprngStream:
    """A ChaCha20 keystream for one purpose, with vectorised samplers on top.

    Every sampler is exact: uniform floats on a dyadic grid, Bernoulli draws with
    probability exactly ``p``, bounded integers and subsets without modulo bias.
    Successive calls read successive, never-overlapping parts of the keystream, so
    a stream built from a :class:`~securefed.randomness.DeterministicRandom` seed
    replays exactly. Reads are serialised by a lock (safe to share across threads).

    A stream refuses to be copied or pickled, and refuses to run in a process forked
    after it was made: a copy would repeat its output, i.e. reuse noise.

    The stream is itself a :class:`~securefed.randomness.RandomSource`
    (:meth:`random_bytes`), so code that takes one, such as stochastic rounding, can
    draw from it directly.

    Args:
        rng: where the 32-byte master key comes from (default: the OS CSPRNG).
        purpose: what the output is for; selects the derived key.

    Raises:
        TypeError: ``rng`` is not a RandomSource or ``purpose`` not a StreamPurpose.
        ValueError: ``rng`` returned other than 32 bytes.
    """

    __slots__ = ("_encryptor", "_key", "_lock", "_offset", "_pid", "_purpose", "_segment")

    def __init__(
        self,
        rng: RandomSource | None = None,
        *,
        purpose: StreamPurpose = StreamPurpose.GENERAL,
    ) -> None:
        if not isinstance(purpose, StreamPurpose):
            raise TypeError("purpose must be a StreamPurpose")
        if rng is not None and not isinstance(rng, RandomSource):
            raise TypeError("rng must be a RandomSource (pass purpose= by keyword)")
        source = OsRandom() if rng is None else rng
        master = source.random_bytes(_MASTER_KEY_BYTES)
        if not isinstance(master, bytes) or len(master) != _MASTER_KEY_BYTES:
            raise ValueError("the randomness source must return 32 bytes")
        self._purpose = purpose
        self._key = _derive_key(master, purpose)
        self._segment = 0
        self._offset = 0
        self._encryptor = self._segment_encryptor(0)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def purpose(self) -> StreamPurpose:
        """What this stream's output is for."""
        return self._purpose

    def __repr__(self) -> str:
        return f"CsprngStream(purpose={self._purpose.name}, key=<hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a CsprngStream cannot be copied or pickled: a copy would repeat it")

    # -- keystream ------------------------------------------------------------------

    def _segment_encryptor(self, segment: int) -> CipherContext:
        cipher = Cipher(algorithms.ChaCha20(self._key, _segment_nonce(segment)), mode=None)
        return cipher.encryptor()

    def _fill(self, out: npt.NDArray[_UIntT]) -> npt.NDArray[_UIntT]:
        """Overwrite ``out`` with the next keystream bytes, as little-endian words."""
        view = out.data.cast("B")
        total = len(view)
        with self._lock:
            if os.getpid() != self._pid:
                raise RuntimeError(
                    "CsprngStream used in a forked process: it would repeat the parent's "
                    "output; create streams after forking"
                )
            done = 0
            while done < total:
                room = _SEGMENT_BYTES - self._offset
                if room <= 0:
                    self._segment += 1
                    self._offset = 0
                    self._encryptor = self._segment_encryptor(self._segment)
                    room = _SEGMENT_BYTES
                step = min(total - done, room, _CHUNK_BYTES)
                self._encryptor.update_into(_ZERO_CHUNK[:step], view[done : done + step])
                done += step
                self._offset += step
        if sys.byteorder == "big":  # pragma: no cover - little-endian CI
            out.byteswap(inplace=True)
        return out

    def random_bytes(self, n: int) -> bytes:
        """The next ``n`` keystream bytes (the :class:`RandomSource` protocol).

        Raises:
            TypeError: ``n`` is not an integer.
            ValueError: ``n`` is negative.
        """
        return self._fill(np.empty(_count(n, "n"), dtype=np.uint8)).tobytes()

    def random_source(self) -> RandomSource:
        """This stream as a :class:`RandomSource` (for APIs typed that way)."""
        return self

    def random_words(self, n: int) -> npt.NDArray[np.uint64]:
        """The next ``n`` raw 64-bit keystream words.

        Raises:
            TypeError: ``n`` is not an integer.
            ValueError: ``n`` is negative.
        """
        return self._fill(np.empty(_count(n, "n"), dtype=np.uint64))

    def _words32(self, n: int) -> npt.NDArray[np.uint32]:
        return self._fill(np.empty(n, dtype=np.uint32))

    # -- floats ---------------------------------------------------------------------

    def uniform(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` floats exactly uniform on the grid {1, 2, ..., 2^53} / 2^53.

        The interval is (0, 1]: never 0 (safe under ``log``), exactly 1 with
        probability 2^-53. Each value is (top 53 bits of a word + 1) * 2^-53, which
        float64 represents exactly. For indices use :meth:`integers`, not
        ``floor(u * m)``.

        Raises:
            TypeError: ``n`` is not an integer.
            ValueError: ``n`` is negative.
        """
        words = self.random_words(n)
        np.right_shift(words, np.uint64(11), out=words)
        u = words.astype(np.float64)
        u += 1.0
        u *= _TWO_POW_M53
        return u

    def normal(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` independent standard normal float64 values (Marsaglia polar method).

        Marsaglia & Bray 1964, "A Convenient Method for Generating Normal Variables",
        SIAM Review 6(3); Knuth, TAOCP vol. 2, §3.4.1, Algorithm P. Each pair comes
        from (x, y) uniform on the grid {-1, -1 + 2^-52, ..., 1 - 2^-52}^2, kept when
        0 < s = x^2 + y^2 < 1 (a pi/4 share), as x * f and y * f with
        f = sqrt(-2 ln s / s). Chosen over Box-Muller because NumPy's log and sqrt
        are vectorised while its float64 sin/cos are not (about 4x faster here).
        The largest value it can return is about 12 in absolute value.

        These are plain floating-point normals; for DP noise use
        :class:`SecureGaussianNoise`, which adds the floating-point mitigation.

        Raises:
            TypeError: ``n`` is not an integer.
            ValueError: ``n`` is negative.
        """
        n = _count(n, "n")
        pairs = (n + 1) // 2
        out = np.empty(2 * pairs, dtype=np.float64)
        for start in range(0, pairs, _POLAR_CHUNK_PAIRS):
            self._polar_into(out, start, min(_POLAR_CHUNK_PAIRS, pairs - start), pairs)
        return out[:n]

    def _polar_into(self, out: npt.NDArray[np.float64], start: int, count: int, half: int) -> None:
        """Write ``count`` polar-method pairs to out[start:] and out[half + start:]."""
        done = 0
        while done < count:
            want = count - done
            draw = int(want / _POLAR_ACCEPT * 1.02) + 32
            # Signed top 53 bits k in [-2^52, 2^52); x = k * 2^-52 is exact.
            signed = self.random_words(2 * draw).view(np.int64)
            np.right_shift(signed, 11, out=signed)
            xy = signed.astype(np.float64)
            xy *= _TWO_POW_M52
            x, y = xy[:draw], xy[draw:]
            s = x * x
            s += y * y
            keep = np.flatnonzero((s < 1.0) & (s > 0.0))[:want]
            got = keep.size
            factor = np.log(s[keep])
            factor *= -2.0
            factor /= s[keep]
            np.sqrt(factor, out=factor)
            lo = start + done
            np.multiply(x[keep], factor, out=out[lo : lo + got])
            np.multiply(y[keep], factor, out=out[half + lo : half + lo + got])
            done += got

    # -- discrete -------------------------------------------------------------------

    def bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        """``n`` independent booleans, each True with probability exactly ``p``.

        Compares a uniform real U (read 64 bits at a time) with ``p``: the first word
        w decides unless w equals T = floor(p * 2^64), and the rare ties (chance
        2^-64 each) are settled by the next word against the exact remainder
        p * 2^64 - T, and so on. So P(True) is exactly the float ``p``, also for
        subnormal ``p``; ``p`` = 0 and 1 are exact. Always reads ``n`` words first,
        whatever ``p`` is.

        Raises:
            TypeError: ``n`` is not an integer or ``p`` not a real number.
            ValueError: ``n`` is negative or ``p`` is outside [0, 1] or NaN.
        """
        n = _count(n, "n")
        p = _probability(p, "p")
        return self._bernoulli(n, p)

    def _bernoulli(self, n: int, p: float) -> npt.NDArray[np.bool_]:
        words = self.random_words(n)
        if p == 1.0:
            return np.ones(n, dtype=np.bool_)
        remainder, whole = math.modf(p * _TWO_POW_64)  # both exact (scaling by 2^64)
        threshold = np.uint64(int(whole))
        out: npt.NDArray[np.bool_] = words < threshold
        if remainder > 0.0:
            ties = np.flatnonzero(words == threshold)
            if ties.size:
                out[ties] = self._bernoulli(ties.size, remainder)
        return out

    def integers(self, n: int, high: int) -> npt.NDArray[np.int64]:
        """``n`` independent integers uniform on [0, ``high``), without modulo bias.

        Rejection as in OpenBSD's ``arc4random_uniform``: a word x (32 bits when
        ``high`` <= 2^32, else 64) is kept only if x < limit, the largest multiple of
        ``high`` not above 2^bits, and then reduced mod ``high``. At least half the
        words are kept (at least 2/3 for 64-bit words).

        Raises:
            TypeError: ``n`` or ``high`` is not an integer.
            ValueError: ``n`` is negative or ``high`` outside [1, 2^63].
        """
        n = _count(n, "n")
        high = _count(high, "high")
        if not 1 <= high <= _MAX_HIGH:
            raise ValueError("high must be in [1, 2**63]")
        bits = 32 if high <= 1 << 32 else 64
        span = 1 << bits
        limit = span - span % high
        out = np.empty(n, dtype=np.int64)
        have = 0
        while have < n:
            want = n - have
            raw: npt.NDArray[np.uint32] | npt.NDArray[np.uint64]
            if limit == span:  # high divides 2^bits: every word is usable
                raw = self._words32(want) if bits == 32 else self.random_words(want)
            else:
                draw = int(want * span / limit * 1.02) + 16
                raw = self._words32(draw) if bits == 32 else self.random_words(draw)
                raw = raw[raw < limit][:want]
            if high != span:
                raw = raw % high
            out[have : have + raw.size] = raw
            have += raw.size
        return out

    def sample_indices(self, n: int, k: int) -> npt.NDArray[np.int64]:
        """``k`` distinct indices from range(``n``): a uniform k-subset in uniform order.

        For k <= n/2: the first k distinct values of i.i.d. uniform draws from
        :meth:`integers` (expected draws below 1.4 k). Otherwise: ``n`` random 64-bit
        sort keys, redrawn in the (chance < n^2 / 2^65) event of a tie, and the
        first k of the stable argsort. Both give every ordered k-subset the same
        probability; sort the result if order does not matter to you.

        Raises:
            TypeError: ``n`` or ``k`` is not an integer.
            ValueError: ``n`` or ``k`` is negative or ``k > n``.
        """
        n = _count(n, "n")
        k = _count(k, "k")
        if k > n:
            raise ValueError("cannot sample k > n distinct indices")
        if k == 0:
            return np.empty(0, dtype=np.int64)
        if 2 * k <= n:
            return self._distinct_by_rejection(n, k)
        while True:
            keys = self.random_words(n)
            order = np.argsort(keys, kind="stable")
            ordered = keys[order]
            if not np.any(ordered[1:] == ordered[:-1]):
                return order[:k].astype(np.int64, copy=False)

    def _distinct_by_rejection(self, n: int, k: int) -> npt.NDArray[np.int64]:
        chosen = np.empty(0, dtype=np.int64)
        while chosen.size < k:
            need = k - chosen.size
            # Expected draws per new value: n / (n - have); a little more saves a round.
            batch = self.integers(int(need * n / (n - chosen.size) * 1.05) + 8, n)
            _, first = np.unique(batch, return_index=True)
            fresh = batch[np.sort(first)]
            fresh = fresh[~np.isin(fresh, chosen, assume_unique=True)]
            chosen = np.concatenate((chosen, fresh))
        return chosen[:k]


def poisson_sample(stream: CsprngStream, n_units: int, rate: float) -> npt.NDArray[np.int64]:
    """Indices of the units included, each independently with probability ``rate``.

    Poisson subsampling as DP-SGD accounting assumes it (Abadi et al. 2016;
    Mironov, Talwar & Zhang 2019): the batch size is random, and a unit's inclusion
    says nothing about any other's. The inclusion probability is exactly ``rate``
    (see :meth:`CsprngStream.bernoulli`).

    Args:
        stream: the randomness (use a :attr:`StreamPurpose.RECORD_SAMPLING` stream).
        n_units: number of units (records or persons), indexed 0..n_units-1.
        rate: the sampling rate q in [0, 1].

    Returns:
        The sorted int64 indices of the sampled units.

    Raises:
        TypeError: ``stream`` is not a CsprngStream or an argument has the wrong type.
        ValueError: ``n_units`` is negative or ``rate`` is outside [0, 1] or NaN.
    """
    if not isinstance(stream, CsprngStream):
        raise TypeError("stream must be a CsprngStream")
    mask = stream.bernoulli(_count(n_units, "n_units"), _probability(rate, "rate"))
    return np.flatnonzero(mask).astype(np.int64, copy=False)


class SecureGaussianNoise:
    """Gaussian noise N(0, std^2) from a CSPRNG, hardened against floating-point attacks.

    Each value is the sum of four independent N(0, std^2) draws divided by 2, as
    Opacus' ``_generate_noise`` does in secure mode (Holohan & Braghin 2021, "Secure
    Random Sampling in Differential Privacy", arXiv:2107.10138, §5.1, with n = 2):
    recovering the underlying uniforms from the output then costs about 2^(53*3)
    work instead of 2^53 (the attack of Jin et al. 2021, arXiv:2112.05307). The
    arithmetic matches Opacus' order: scale each draw by ``std``, add them in turn,
    divide by 2. Differences from Opacus: the draws come from :meth:`CsprngStream.normal`
    and the sum is formed in float64 before one rounding to the output dtype (Opacus
    computes in the parameter's dtype); Opacus' discarded first draw only resets
    torch's generator state and has no counterpart here.

    Args:
        stream: the randomness (default: a fresh OS-keyed DP_NOISE stream).

    Raises:
        TypeError: ``stream`` is not a CsprngStream.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: CsprngStream | None = None) -> None:
        if stream is None:
            stream = CsprngStream(purpose=StreamPurpose.DP_NOISE)
        if not isinstance(stream, CsprngStream):
            raise TypeError("stream must be a CsprngStream")
        self._stream = stream

    def __repr__(self) -> str:
        return f"SecureGaussianNoise({self._stream!r})"

    def sample(
        self,
        shape: int | Sequence[int] | torch.Size,
        std: float,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """A tensor of i.i.d. N(0, ``std``^2) noise.

        Args:
            shape: the tensor's shape.
            std: the standard deviation (noise multiplier times clipping norm).
            dtype: a floating-point dtype for the result.
            device: where to put the result (default: the CPU).

        Returns:
            A new tensor; zeros when ``std`` is 0 (and no randomness is read).

        Raises:
            TypeError: ``shape``, ``std`` or ``dtype`` has the wrong type.
            ValueError: a dimension or ``std`` is negative, or ``std`` is not finite.
        """
        dims = _shape(shape)
        std = _real(std, "std")
        if not (math.isfinite(std) and std >= 0.0):
            raise ValueError("std must be finite and non-negative")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError("dtype must be a real floating-point torch dtype")
        if std == 0.0:
            return torch.zeros(dims, dtype=dtype, device=device)
        total = math.prod(dims)
        out = np.empty(total, dtype=np.float64)
        for start in range(0, total, _NOISE_CHUNK):
            m = min(_NOISE_CHUNK, total - start)
            draws = self._stream.normal(_SECURE_DRAWS * m).reshape(_SECURE_DRAWS, m)
            draws *= std
            acc = out[start : start + m]
            np.add(draws[0], draws[1], out=acc)
            for row in draws[2:]:
                acc += row
            acc /= 2.0  # sqrt(_SECURE_DRAWS): the sum has variance 4 std^2
        numpy_dtype = _NUMPY_FLOATS.get(dtype)
        if numpy_dtype is not None:  # NumPy's cast is single-threaded: steadier timing
            tensor = torch.from_numpy(out.astype(numpy_dtype, copy=False).reshape(dims))
        else:
            tensor = torch.from_numpy(out.reshape(dims)).to(dtype=dtype)
        return tensor if device is None else tensor.to(device=device)


def _shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool | np.bool_):
        return (_count(shape, "shape"),)
    if not isinstance(shape, Sequence | torch.Size):
        raise TypeError("shape must be an int or a sequence of ints")
    return tuple(_count(dim, "shape dimension") for dim in shape)
