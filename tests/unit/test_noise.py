"""CSPRNG sampling: layout pinned, exact samplers, secure Gaussian noise, no global RNGs.

Every statistical check draws from a :class:`DeterministicRandom` under a fixed seed,
so it cannot flake. Each one rejects when a p-value falls below ``ALPHA`` (or, for
mean/variance bounds, beyond ``Z`` standard errors); the comment at each check says
how often it would fail by chance under a fresh seed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import math
import pickle
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from scipy import stats

import securefed.privacy.noise as noise
from securefed.privacy.noise import (
    CsprngStream,
    SecureGaussianNoise,
    StreamPurpose,
    poisson_sample,
)
from securefed.randomness import DeterministicRandom, RandomSource, chacha20_stream

ALPHA = 1e-4
"""p-value threshold: under a fresh seed a check fails by chance with probability 1e-4."""
Z = 5.0
"""Standard errors allowed for means and variances: two-sided false-alarm rate 5.7e-7."""
N_DRAWS = 200_000


def _seed(*labels: object) -> bytes:
    return hashlib.sha256("/".join(map(str, labels)).encode()).digest()


def _stream(
    label: object = "noise", purpose: StreamPurpose = StreamPurpose.DP_NOISE
) -> CsprngStream:
    return CsprngStream(DeterministicRandom(_seed(label)), purpose=purpose)


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac, independent of the module under test."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def _expected_keystream(label: object, purpose: StreamPurpose, segment_bytes: int, n: int):
    """The documented layout, rebuilt from its description in the module docstring."""
    master = DeterministicRandom(_seed(label)).random_bytes(32)
    key = _hkdf_sha256(
        master,
        b"securefed.privacy.noise",
        b"securefed/csprng-stream/v1/" + purpose.value.encode(),
        32,
    )
    out = b""
    segment = 0
    while len(out) < n:
        nonce = bytes(4) + segment.to_bytes(8, "little") + bytes(4)
        out += chacha20_stream(key, nonce, segment_bytes)
        segment += 1
    return master, key, out[:n]


# -- layout and determinism ---------------------------------------------------------


def test_keystream_layout_matches_the_documented_derivation(monkeypatch):
    # Tiny segments, so that reads cross several nonce segments.
    monkeypatch.setattr(noise, "_SEGMENT_BYTES", 192)
    _, _, expected = _expected_keystream("layout", StreamPurpose.DP_NOISE, 192, 8 * 100)
    stream = _stream("layout")
    parts = [stream.random_words(k) for k in (1, 30, 0, 40, 29)]
    got = np.concatenate(parts).astype("<u8").tobytes()
    assert got == expected


def test_default_segments_match_the_layout():
    _, _, expected = _expected_keystream("big", StreamPurpose.RECORD_SAMPLING, 1 << 20, 4096)
    words = _stream("big", StreamPurpose.RECORD_SAMPLING).random_words(512)
    assert words.astype("<u8").tobytes() == expected


def test_stream_is_a_random_source():
    stream = _stream("bytes")
    assert isinstance(stream, RandomSource)
    assert stream.random_source() is stream
    whole = _stream("bytes").random_words(4).astype("<u8").tobytes()
    assert stream.random_bytes(5) + stream.random_bytes(0) + stream.random_bytes(27) == whole
    # A stream can key a child stream, as any RandomSource can.
    child = CsprngStream(_stream("parent"), purpose=StreamPurpose.STOCHASTIC_ROUNDING)
    assert child.random_words(2).shape == (2,)


def test_successive_calls_never_overlap():
    whole = _stream("calls").random_words(1000)
    stream = _stream("calls")
    assert np.array_equal(np.concatenate([stream.random_words(k) for k in (3, 0, 500, 497)]), whole)


def test_same_seed_same_output_different_seed_different_output():
    def run(label: str) -> list[np.ndarray]:
        s = _stream(label)
        return [
            s.random_words(50),
            s.uniform(50),
            s.normal(51),
            s.bernoulli(50, 0.3),
            s.integers(50, 1000),
            s.integers(50, 10**15),
            s.sample_indices(100, 10),
            s.sample_indices(100, 90),
            poisson_sample(s, 100, 0.2),
            SecureGaussianNoise(s).sample((5, 7), 1.3, dtype=torch.float64).numpy(),
        ]

    a, b, c = run("det"), run("det"), run("other")
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    for x, y in zip(a, c, strict=True):
        if x.dtype != np.bool_:
            assert not np.array_equal(x, y)


def test_purposes_never_share_keystream():
    # Same seed, every purpose: no 64-bit word in common (a shared block would repeat
    # eight of them).
    words = {p: _stream("shared", p).random_words(20_000) for p in StreamPurpose}
    seen: set[int] = set()
    for w in words.values():
        as_set = set(w.tolist())
        assert len(as_set) == w.size
        assert not seen & as_set
        seen |= as_set
    assert len({p.value for p in StreamPurpose}) == len(StreamPurpose)


def test_concurrent_reads_partition_the_stream():
    stream = _stream("threads")
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            w = stream.random_words(100)
            with lock:
                results.append(w)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.concatenate(results)
    assert sorted(got.tolist()) == sorted(_stream("threads").random_words(20_000).tolist())


# -- each sampler restated from its docstring, on the same keystream ------------------


def test_uniform_definition():
    words = _stream("def-u").random_words(1000)
    expected = ((words >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
    assert np.array_equal(_stream("def-u").uniform(1000), expected)


def test_normal_definition():
    # Marsaglia polar on the grid k * 2^-52, k the signed top 53 bits of each word; one
    # batch of int(pairs / (pi/4) * 1.02) + 32 candidates, x from its first half and y
    # from its second. Scalar libm log may differ from NumPy's in the last place.
    n, pairs = 101, 51
    draw = int(pairs / (math.pi / 4) * 1.02) + 32
    words = _stream("def-n").random_words(2 * draw).view(np.int64)
    grid = [int(k >> 11) * 2.0**-52 for k in words]
    xs, ys = [], []
    for x, y in zip(grid[:draw], grid[draw:], strict=True):
        s = x * x + y * y
        if 0.0 < s < 1.0 and len(xs) < pairs:
            f = math.sqrt(-2.0 * math.log(s) / s)
            xs.append(x * f)
            ys.append(y * f)
    expected = np.array(xs + ys)[:n]
    np.testing.assert_allclose(_stream("def-n").normal(n), expected, rtol=1e-14, atol=0)


def test_bernoulli_and_integers_definitions():
    p = 0.3  # >= 2^-12, so floor(p * 2^64) decides alone
    words = _stream("def-b").random_words(1000)
    assert np.array_equal(_stream("def-b").bernoulli(1000, p), words < np.uint64(int(p * 2**64)))
    high = 10
    limit = 2**32 - 2**32 % high
    raw = _stream("def-i").random_words(600).view("<u4")
    expected = (raw[raw < limit] % high)[:1000].astype(np.int64)
    assert np.array_equal(_stream("def-i").integers(expected.size, high), expected)


# -- uniform and normal -------------------------------------------------------------


def test_uniform_is_on_the_2_pow_53_grid_in_the_half_open_interval():
    u = _stream("uniform").uniform(N_DRAWS)
    assert u.dtype == np.float64
    assert u.min() > 0.0
    assert u.max() <= 1.0
    scaled = u * 2.0**53
    assert np.array_equal(scaled, np.floor(scaled))
    # KS against U(0, 1): fails by chance with probability ALPHA under a fresh seed.
    assert stats.kstest(u, "uniform").pvalue > ALPHA


def test_normal_matches_the_standard_normal():
    z = _stream("normal").normal(N_DRAWS)
    assert z.dtype == np.float64
    assert z.shape == (N_DRAWS,)
    # KS: false alarm ALPHA. Mean and variance within Z standard errors (1/sqrt(n),
    # sqrt(2/n)): false alarm 5.7e-7 each.
    assert stats.kstest(z, "norm").pvalue > ALPHA
    assert abs(z.mean()) < Z / math.sqrt(N_DRAWS)
    assert abs(z.var() - 1.0) < Z * math.sqrt(2.0 / N_DRAWS)
    assert np.abs(z).max() < 13.0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 32_769])
def test_normal_lengths(n):
    assert _stream("len").normal(n).shape == (n,)


# -- bernoulli and poisson sampling -------------------------------------------------


@pytest.mark.parametrize("p", [0.3, 0.5, 1e-3])
def test_bernoulli_rate(p):
    b = _stream(("bern", p)).bernoulli(N_DRAWS, p)
    assert b.dtype == np.bool_
    assert b.shape == (N_DRAWS,)
    # Exact binomial test: false alarm ALPHA under a fresh seed.
    assert stats.binomtest(int(b.sum()), N_DRAWS, p).pvalue > ALPHA


def test_bernoulli_extremes_and_fixed_consumption():
    s, t = _stream("extremes"), _stream("extremes")
    assert not s.bernoulli(1000, 0.0).any()
    assert s.bernoulli(1000, 1.0).all()
    assert not s.bernoulli(100_000, 1e-300).any()  # P(any True) ~ 1e-295
    t.random_words(102_000)
    # Every call read exactly n words, whatever p was.
    assert np.array_equal(s.random_words(10), t.random_words(10))


def test_bernoulli_ties_are_settled_by_further_words(monkeypatch):
    # p * 2^64 = 0.75: threshold 0, remainder 0.75, whose threshold is 3 * 2^62.
    p = 3.0 * 2.0**-66
    feed: Iterator[np.ndarray] = iter(
        [
            np.array([0, 0, 1, 0], dtype=np.uint64),
            np.array([3 * 2**62 - 1, 3 * 2**62, 5], dtype=np.uint64),
        ]
    )
    monkeypatch.setattr(CsprngStream, "random_words", lambda self, n: next(feed))
    got = _stream("ties").bernoulli(4, p)
    assert got.tolist() == [True, False, False, True]


def test_poisson_sample():
    idx = poisson_sample(_stream("poisson"), N_DRAWS, 0.01)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)
    assert idx.min() >= 0
    assert idx.max() < N_DRAWS
    # Binomial test on the batch size: false alarm ALPHA.
    assert stats.binomtest(idx.size, N_DRAWS, 0.01).pvalue > ALPHA
    assert poisson_sample(_stream("p0"), 100, 0.0).size == 0
    assert np.array_equal(poisson_sample(_stream("p1"), 100, 1.0), np.arange(100))
    assert poisson_sample(_stream("p2"), 0, 0.5).size == 0


# -- integers and subsets -----------------------------------------------------------


def test_integers_uniform_chi_square():
    x = _stream("ints").integers(N_DRAWS, 10)
    assert x.dtype == np.int64
    assert x.min() >= 0
    assert x.max() < 10
    # Chi-square, 9 degrees of freedom, 20 000 expected per cell: false alarm ALPHA.
    assert stats.chisquare(np.bincount(x, minlength=10)).pvalue > ALPHA


@pytest.mark.parametrize("bits", [32, 64])
def test_integers_have_no_modulo_bias(bits):
    # high ~ 2^bits / 2.5: a plain "word % high" would land in the lower half of
    # [0, high) with probability 0.6; rejection gives 0.5. Binomial test at 0.5:
    # false alarm ALPHA; against 0.6 it would fail with p ~ 0.
    high = int(2**bits / 2.5)
    x = _stream(("bias", bits)).integers(N_DRAWS, high)
    assert x.min() >= 0
    assert x.max() < high
    low = int((x < high // 2).sum())
    assert stats.binomtest(low, N_DRAWS, 0.5).pvalue > ALPHA


@pytest.mark.parametrize("high", [1, 2, 7, 2**32 - 1, 2**32, 2**32 + 1, 2**62 + 1, 2**63])
def test_integers_range(high):
    x = _stream(("range", high)).integers(2000, high)
    assert x.min() >= 0
    assert x.max() < high
    if high >= 2**32:
        assert x.max() >= high // 2  # the top bits are used (fails with chance 2^-2000)


def test_sample_indices_small_cases_are_uniform_over_ordered_subsets():
    # n=5, k=2 takes the rejection path; n=5, k=4 the sort-key path. Chi-square over
    # all 20 / 120 ordered subsets (expected 100 per cell): false alarm ALPHA each.
    for k, cells in ((2, 20), (4, 120)):
        s = _stream(("subsets", k))
        counts = Counter(tuple(s.sample_indices(5, k).tolist()) for _ in range(100 * cells))
        assert len(counts) == cells
        assert all(len(set(key)) == k for key in counts)
        assert stats.chisquare(list(counts.values())).pvalue > ALPHA


@pytest.mark.parametrize(("n", "k"), [(1000, 10), (1000, 500), (1000, 501), (1000, 1000)])
def test_sample_indices_distinct_and_uniform(n, k):
    s = _stream(("indices", n, k))
    counts = np.zeros(n, dtype=np.int64)
    reps = max(1, 100_000 // k)
    for _ in range(reps):
        idx = s.sample_indices(n, k)
        assert idx.dtype == np.int64
        assert idx.size == k
        assert np.unique(idx).size == k
        assert idx.min() >= 0
        assert idx.max() < n
        counts[idx] += 1
    if k < n:
        # Each index's count over reps draws: chi-square false alarm ALPHA (the
        # multivariate-hypergeometric counts are less spread than multinomial ones,
        # so the test is conservative).
        assert stats.chisquare(counts).pvalue > ALPHA


def test_sample_indices_edges_and_tie_redraw(monkeypatch):
    s = _stream("edges")
    assert s.sample_indices(0, 0).size == 0
    assert s.sample_indices(10, 0).size == 0
    assert sorted(s.sample_indices(10, 10).tolist()) == list(range(10))
    feed = iter([np.array([5, 5, 1], dtype=np.uint64), np.array([9, 4, 7], dtype=np.uint64)])
    monkeypatch.setattr(CsprngStream, "random_words", lambda self, n: next(feed))
    # The tied keys are thrown away; the second draw orders the indices 1, 2, 0.
    assert s.sample_indices(3, 3).tolist() == [1, 2, 0]


# -- secure Gaussian noise ----------------------------------------------------------


def test_secure_noise_distribution():
    std = 1.7
    x = SecureGaussianNoise(_stream("secure")).sample((N_DRAWS,), std, dtype=torch.float64)
    values = x.numpy()
    # KS against N(0, 1.7^2): false alarm ALPHA; mean and variance within Z
    # standard errors: false alarm 5.7e-7 each.
    assert stats.kstest(values, "norm", args=(0.0, std)).pvalue > ALPHA
    assert abs(values.mean()) < Z * std / math.sqrt(N_DRAWS)
    assert abs(values.var() / std**2 - 1.0) < Z * math.sqrt(2.0 / N_DRAWS)


def test_secure_noise_is_the_opacus_sum_of_four():
    # Opacus secure mode: sum over 4 draws of N(0, std^2), added in turn, then / 2.
    std, m = 0.37, 1000
    got = SecureGaussianNoise(_stream("opacus")).sample((10, 100), std, dtype=torch.float64)
    draws = _stream("opacus").normal(4 * m).reshape(4, m) * std
    expected = np.zeros(m)
    for row in draws:
        expected = expected + row
    assert np.array_equal(got.numpy().ravel(), expected / 2)


def test_secure_noise_spans_batches(monkeypatch):
    monkeypatch.setattr(noise, "_NOISE_CHUNK", 7)
    a = SecureGaussianNoise(_stream("chunks")).sample((5, 5), 1.0, dtype=torch.float64)
    parts = []
    s = _stream("chunks")
    for m in (7, 7, 7, 4):
        d = s.normal(4 * m).reshape(4, m)
        parts.append((((d[0] + d[1]) + d[2]) + d[3]) / 2)
    assert np.array_equal(a.numpy().ravel(), np.concatenate(parts))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_secure_noise_dtypes_and_shapes(dtype):
    noise_gen = SecureGaussianNoise(_stream(("dtype", str(dtype))))
    t = noise_gen.sample(torch.Size([3, 4]), 2.0, dtype=dtype, device="cpu")
    assert t.dtype == dtype
    assert t.shape == (3, 4)
    assert t.device.type == "cpu"
    assert torch.isfinite(t).all()
    assert noise_gen.sample(6, 1.0, dtype=dtype).shape == (6,)
    assert noise_gen.sample((), 1.0, dtype=dtype).shape == ()
    assert noise_gen.sample((0, 3), 1.0, dtype=dtype).shape == (0, 3)


def test_secure_noise_float32_is_the_rounded_float64():
    a = SecureGaussianNoise(_stream("f32")).sample((100,), 1.5, dtype=torch.float64)
    b = SecureGaussianNoise(_stream("f32")).sample((100,), 1.5, dtype=torch.float32)
    assert torch.equal(a.to(torch.float32), b)


def test_zero_std_gives_zeros_and_reads_nothing():
    s, t = _stream("zero"), _stream("zero")
    z = SecureGaussianNoise(s).sample((4, 4), 0.0, dtype=torch.float64)
    assert torch.equal(z, torch.zeros(4, 4, dtype=torch.float64))
    assert np.array_equal(s.random_words(4), t.random_words(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_secure_noise_on_cuda():
    a = SecureGaussianNoise(_stream("cuda")).sample((1000,), 1.0, device="cuda")
    b = SecureGaussianNoise(_stream("cuda")).sample((1000,), 1.0)
    assert a.device.type == "cuda"
    assert torch.equal(a.cpu(), b)


# -- global generators are never touched --------------------------------------------


def _exercise_everything() -> None:
    s = _stream("globals")
    s.random_words(10)
    s.uniform(10)
    s.normal(10)
    s.bernoulli(10, 0.5)
    s.integers(10, 7)
    s.integers(10, 2**40)
    s.sample_indices(50, 5)
    s.sample_indices(50, 45)
    poisson_sample(s, 50, 0.1)
    g = SecureGaussianNoise(s)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        g.sample((200, 3), 1.0, dtype=dtype)
    g.sample((3,), 0.0)


def test_global_generators_untouched(monkeypatch):
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a global random generator was used")

    for name in ("normal", "randn", "rand", "randint", "bernoulli", "randperm", "multinomial"):
        monkeypatch.setattr(torch, name, forbidden)
    for name in ("randn_like", "rand_like", "randint_like", "poisson"):
        monkeypatch.setattr(torch, name, forbidden)
    for name in ("normal_", "uniform_", "bernoulli_", "random_", "exponential_"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    _exercise_everything()
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0]
    assert np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]


# -- hygiene: secrets, copies, forks ------------------------------------------------


def test_repr_shows_no_key_material():
    stream = _stream("repr")
    master, key, _ = _expected_keystream("repr", StreamPurpose.DP_NOISE, 64, 0)
    texts = [repr(stream), str(stream), repr(SecureGaussianNoise(stream))]
    for text in texts:
        assert "hidden" in text
        for secret in (master, key):
            assert secret.hex() not in text
            assert secret.hex()[:8] not in text
            assert repr(secret)[2:12] not in text
    assert "DP_NOISE" in repr(stream)
    assert not hasattr(stream, "__dict__")


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickle.dumps])
def test_streams_cannot_be_copied(clone: Callable[[object], object]):
    with pytest.raises(TypeError, match="cannot be copied"):
        clone(_stream("copy"))


def test_forked_process_is_refused():
    stream = _stream("fork")
    stream._pid = -1  # what a forked child would see: a pid other than the creator's
    with pytest.raises(RuntimeError, match="forked"):
        stream.random_words(1)


# -- bad arguments ------------------------------------------------------------------


def test_constructor_validation():
    with pytest.raises(TypeError, match="StreamPurpose"):
        CsprngStream(purpose="dp-noise")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RandomSource"):
        CsprngStream(StreamPurpose.DP_NOISE)  # type: ignore[arg-type]

    class Short:
        def random_bytes(self, n: int) -> bytes:
            return bytes(n - 1)

    with pytest.raises(ValueError, match="32 bytes"):
        CsprngStream(Short())
    with pytest.raises(TypeError, match="CsprngStream"):
        SecureGaussianNoise(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CsprngStream"):
        poisson_sample(object(), 10, 0.5)  # type: ignore[arg-type]


def test_default_source_is_the_os():
    a, b = CsprngStream(), CsprngStream()
    assert a.purpose is StreamPurpose.GENERAL
    assert not np.array_equal(a.random_words(4), b.random_words(4))
    assert SecureGaussianNoise().sample((3,), 1.0).shape == (3,)


@pytest.mark.parametrize("bad", [-0.1, 1.0000001, math.nan, math.inf, -math.inf])
def test_bad_probabilities(bad):
    s = _stream("bad-p")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.bernoulli(3, bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        poisson_sample(s, 3, bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, np.bool_(False)])
def test_probability_types(bad):
    with pytest.raises(TypeError, match="real number"):
        _stream("bad-p-type").bernoulli(3, bad)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.random_words(-1),
        lambda s: s.random_bytes(-1),
        lambda s: s.uniform(-5),
        lambda s: s.normal(-1),
        lambda s: s.integers(3, 0),
        lambda s: s.integers(3, -4),
        lambda s: s.integers(3, 2**63 + 1),
        lambda s: s.sample_indices(3, 4),
        lambda s: s.sample_indices(-1, 0),
        lambda s: poisson_sample(s, -1, 0.5),
    ],
)
def test_bad_counts_raise_value_error(call):
    with pytest.raises(ValueError, match=r"non-negative|high|k > n"):
        call(_stream("bad-n"))


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.random_words(2.0),
        lambda s: s.normal(True),
        lambda s: s.integers(3, 2.5),
        lambda s: s.sample_indices(10, "3"),
        lambda s: s.bernoulli(None, 0.5),
    ],
)
def test_bad_count_types_raise_type_error(call):
    with pytest.raises(TypeError, match="integer"):
        call(_stream("bad-n-type"))


def test_numpy_integers_are_accepted():
    s = _stream("np-int")
    assert s.integers(np.int64(5), np.int32(3)).shape == (5,)
    assert SecureGaussianNoise(s).sample((np.int64(2), 3), np.float32(1.0)).shape == (2, 3)


@pytest.mark.parametrize(
    ("shape", "std", "dtype", "error"),
    [
        ((3,), -1.0, torch.float32, ValueError),
        ((3,), math.nan, torch.float32, ValueError),
        ((3,), math.inf, torch.float32, ValueError),
        ((3,), "1.0", torch.float32, TypeError),
        ((3,), True, torch.float32, TypeError),
        ((3,), 1.0, torch.int64, TypeError),
        ((3,), 1.0, torch.complex64, TypeError),
        ((3,), 1.0, np.float32, TypeError),
        ((-1, 3), 1.0, torch.float32, ValueError),
        ((2.5,), 1.0, torch.float32, TypeError),
        (2.5, 1.0, torch.float32, TypeError),
        (None, 1.0, torch.float32, TypeError),
    ],
)
def test_secure_noise_bad_arguments(shape, std, dtype, error):
    with pytest.raises(error):
        SecureGaussianNoise(_stream("bad")).sample(shape, std, dtype=dtype)
