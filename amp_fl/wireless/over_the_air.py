"""Over-the-air (analog) aggregation: the channel between the PIUs' replies and the server's aggregator.

Pure NumPy, no Flower. Every participating PIU transmits its update at the same time on the same
band, one real entry per channel use (the in-phase dimension), and the server receives the
superposition plus receiver noise. The model (Zhu, Wang and Huang, "Broadband analog aggregation
for low-latency federated edge learning", IEEE TWC 2020, truncated channel inversion):

- Fading: PIU k's channel in a round is ``h_k ~ CN(0, 1)`` (Rayleigh, ``|h_k|^2 ~ Exp(1)``),
  independent across PIUs and rounds; large-scale path loss is taken as compensated by slow
  power control, as in that paper's analysis.
- Channel estimate (optional error): the PIU knows ``h^_k = h_k + e_k``, ``e_k ~ CN(0, sigma_e^2)``.
- Truncation: a PIU with ``|h^_k|^2 < g_th`` stays silent this round (its update never arrives).
- Inversion under the budget P0: a transmitting PIU sends ``x_k = sqrt(rho) s_k / h^_k`` with
  ``rho = P0 * g_th``, so its power per channel use, ``rho |s_k|^2 / |h^_k|^2``, is at most
  ``P0 * mean(s_k^2)`` (at most P0 for normalised signals).
- Receiver: ``y = sum_k h_k x_k + z`` with ``z ~ N(0, N0)`` per real channel use and
  ``N0 = P0 / SNR`` (``snr_db``; ``None``: a noiseless receiver). The server keeps the in-phase
  part: each transmitter enters with the real gain ``a_k = Re(h_k / h^_k)`` (exactly 1 with
  perfect channel knowledge).
- Normalisation (optional): before sending, every transmitting PIU maps array ``a`` of its update
  to ``s = (u - m_a) / v_a`` with one mean ``m_a`` and scale ``v_a`` common to all transmitters
  (``m_a``: the mean of the transmitted entries of ``a`` over the transmitters; ``v_a``: the
  largest of their RMS deviations from ``m_a``, so every PIU's mean power per entry is at most 1);
  two numbers per array and PIU go to the server digitally (side information) and it broadcasts
  the common pair. The server de-normalises: ``estimate = v_a * y_hat + m_a``. This map is affine
  and common, so it commutes with the average.
- Aggregation: entry ``j`` is divided by ``c_j``, the number of transmitting PIUs that hold it (the
  server knows who transmits: a silent PIU signals it on a control channel). FedAvg: every PIU
  holds every (unpruned) entry, so ``c_j`` is the number of transmitters; AMP-FL's per-region
  aggregation: each entry averaged over the PIUs whose sub-model held it. Entries nobody
  transmitted get 0 (no update) and cost no channel use.

Then ``estimate_j = mean_{k in T_j} a_k u_kj + v_a z_j / (sqrt(rho) c_j)`` (+ the bias
``m_a (1 - mean_{k in T_j} a_k)`` under estimation error), and with perfect channel knowledge the error is
Gaussian with variance :func:`noise_error_variance` ``= v_a^2 N0 / (rho c_j^2)``.

Every draw comes from generators derived from the run seed (:func:`~amp_fl.wireless.seeding.derive_rng`):
PIU k's fading and estimation error in round t from ``("ota.fading", t, k)`` (independent of
which other PIUs take part), the receiver noise of round t from ``("ota.noise", t)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amp_fl.errors import check_argument
from amp_fl.wireless.seeding import check_seed, derive_rng

FADING_STREAM = "ota.fading"
NOISE_STREAM = "ota.noise"


@dataclass(frozen=True)
class OtaSettings:
    """The analog uplink's settings; also the run config's ``ota`` section (read with ``aggregation=over_the_air``).

    Its checks are the only ones: ``amp_fl.config`` reports them under ``ota.<field>``.

    Parameters
    ----------
    snr_db : float or None, default 20.0
        Transmit SNR ``P0 / N0`` in dB (noise per real channel use); ``None``: noiseless receiver.
    power_budget : float, default 1.0
        P0, the most power a PIU may spend per channel use (the unit of the noise power too).
    truncation_threshold : float, default 0.1
        g_th on the estimated channel gain ``|h^_k|^2`` (mean gain 1): PIUs below stay silent;
        ``P(silent) = 1 - exp(-g_th)`` with perfect channel knowledge. Must be > 0 (inverting a
        deep fade needs unbounded power).
    estimation_error_var : float, default 0.0
        sigma_e^2 of the channel estimate ``h^ = h + e``, ``e ~ CN(0, sigma_e^2)``.
    normalise : bool, default True
        Normalise each array of each update (common mean and scale) before sending.
    """

    snr_db: float | None = 20.0
    power_budget: float = 1.0
    truncation_threshold: float = 0.1
    estimation_error_var: float = 0.0
    normalise: bool = True

    def __post_init__(self) -> None:
        check_argument(
            self.snr_db is None or math.isfinite(self.snr_db),
            "snr_db",
            f"must be a finite number of dB or None (null), got {self.snr_db}",
        )
        check_argument(
            math.isfinite(self.power_budget) and self.power_budget > 0,
            "power_budget",
            f"must be a finite number > 0, got {self.power_budget}",
        )
        check_argument(
            math.isfinite(self.truncation_threshold) and self.truncation_threshold > 0,
            "truncation_threshold",
            "must be a finite number > 0 (inverting a deep fade needs unbounded power), "
            f"got {self.truncation_threshold}",
        )
        check_argument(
            math.isfinite(self.estimation_error_var) and self.estimation_error_var >= 0,
            "estimation_error_var",
            f"must be a finite number >= 0, got {self.estimation_error_var}",
        )

    @property
    def noise_var(self) -> float:
        """N0 per real channel use: ``P0 / 10^(snr_db / 10)``; 0 without noise."""
        return 0.0 if self.snr_db is None else self.power_budget / 10.0 ** (self.snr_db / 10.0)

    @property
    def rho(self) -> float:
        """The common receive-power scaling of truncated channel inversion, ``P0 * g_th``."""
        return self.power_budget * self.truncation_threshold


def silence_probability(truncation_threshold: float) -> float:
    """``P(|h|^2 < g_th) = 1 - exp(-g_th)`` for Rayleigh fading with perfect channel knowledge."""
    check_argument(truncation_threshold > 0, "truncation_threshold", f"must be > 0, got {truncation_threshold}")
    return -math.expm1(-truncation_threshold)


def noise_error_variance(settings: OtaSettings, counts: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Variance of the estimate's error per entry with perfect channel knowledge: ``v^2 N0 / (rho c^2)``.

    ``counts``: transmitters holding each entry (``c_j``); ``scale``: the array's normalisation
    scale ``v_a`` (1 without normalisation). Entries with ``c_j = 0`` get 0 (not estimated).
    """
    counts = np.asarray(counts, dtype=np.float64)
    check_argument(bool(np.all(counts >= 0)), "counts", "must be >= 0")
    with np.errstate(divide="ignore"):
        var = scale**2 * settings.noise_var / (settings.rho * counts**2)
    return np.where(counts > 0, var, 0.0)


@dataclass(frozen=True, eq=False)  # holds arrays
class ChannelDraw:
    """The PIUs' channels in one round (aligned with ``devices``).

    ``gain`` ``h_k``, ``estimate`` ``h^_k`` (complex), ``transmits`` whether ``|h^_k|^2 >= g_th``,
    and ``coefficient`` ``a_k = Re(h_k / h^_k)`` (0 for silent PIUs).
    """

    devices: np.ndarray
    gain: np.ndarray
    estimate: np.ndarray
    transmits: np.ndarray
    coefficient: np.ndarray

    @property
    def transmitters(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.devices[self.transmits])

    @property
    def silent(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.devices[~self.transmits])


def channel_from_gains(
    settings: OtaSettings, devices: Sequence[int], gain: np.ndarray, estimate: np.ndarray | None = None
) -> ChannelDraw:
    """A :class:`ChannelDraw` from given complex gains (and estimates; default: perfect knowledge)."""
    devices_arr = np.asarray(devices, dtype=np.int64).reshape(-1)
    gain = np.asarray(gain, dtype=np.complex128).reshape(-1)
    estimate = gain.copy() if estimate is None else np.asarray(estimate, dtype=np.complex128).reshape(-1)
    check_argument(gain.size == devices_arr.size, "gain", f"{gain.size} gains for {devices_arr.size} devices")
    check_argument(
        estimate.size == devices_arr.size, "estimate", f"{estimate.size} estimates for {devices_arr.size} devices"
    )
    check_argument(np.unique(devices_arr).size == devices_arr.size, "devices", "must be distinct")
    transmits = np.abs(estimate) ** 2 >= settings.truncation_threshold
    coefficient = np.zeros(devices_arr.size, dtype=np.float64)
    coefficient[transmits] = np.real(gain[transmits] / estimate[transmits])
    return ChannelDraw(devices_arr, gain, estimate, transmits, coefficient)


def draw_channel(settings: OtaSettings, seed: int, server_round: int, devices: Sequence[int]) -> ChannelDraw:
    """Round ``server_round``'s fading and channel estimates of ``devices`` (each PIU from its own generator)."""
    seed = check_seed(seed)
    check_argument(server_round >= 0, "server_round", f"must be >= 0, got {server_round}")
    gains, estimates = [], []
    sigma_e = math.sqrt(settings.estimation_error_var / 2.0)
    for device in devices:
        rng = derive_rng(seed, FADING_STREAM, int(server_round), int(device))
        re, im, ere, eim = rng.standard_normal(4)
        h = complex(re, im) / math.sqrt(2.0)
        gains.append(h)
        estimates.append(h + sigma_e * complex(ere, eim))
    return channel_from_gains(settings, devices, np.asarray(gains), np.asarray(estimates))


@dataclass(frozen=True, eq=False)  # holds arrays
class OtaResult:
    """What the server recovers in one round.

    Attributes
    ----------
    estimate : list of float64 np.ndarray
        Per array, the estimated mean update over the transmitting PIUs holding each entry (0 where none).
    counts : list of int np.ndarray
        ``c_j`` per entry: transmitting PIUs that hold it.
    channel : ChannelDraw
        The round's channels (who transmitted, who stayed silent).
    offsets, scales : list of float
        The normalisation pair ``(m_a, v_a)`` of each array (``(0, 1)`` without normalisation).
    transmit_power : dict[int, float]
        Each transmitter's mean power per channel use, ``rho * mean(s^2) / |h^|^2`` (<= P0 when normalised).
    channel_uses : int
        Real channel uses of the round: entries held by at least one transmitter.
    """

    estimate: list[np.ndarray]
    counts: list[np.ndarray]
    channel: ChannelDraw
    offsets: list[float]
    scales: list[float]
    transmit_power: dict[int, float]
    channel_uses: int


def _normalisation(values: list[np.ndarray], held: list[np.ndarray]) -> tuple[float, float]:
    """Common ``(m, v)`` of one array over the transmitters: mean of held entries, largest RMS deviation."""
    total = sum(float(np.sum(u[h], dtype=np.float64)) for u, h in zip(values, held, strict=True))
    count = sum(int(np.count_nonzero(h)) for h in held)
    if count == 0:
        return 0.0, 1.0
    offset = total / count
    spread = 0.0
    for u, h in zip(values, held, strict=True):
        n = int(np.count_nonzero(h))
        if n:
            spread = max(spread, float(np.mean((u[h].astype(np.float64) - offset) ** 2)))
    scale = math.sqrt(spread)
    return offset, (scale if scale > 0 else 1.0)


def superpose(
    settings: OtaSettings,
    channel: ChannelDraw,
    values: Sequence[Sequence[np.ndarray]],
    held: Sequence[Sequence[np.ndarray]] | None,
    noise_rng: np.random.Generator,
) -> OtaResult:
    """One analog aggregation: what the server estimates from the PIUs' simultaneous transmission.

    Parameters
    ----------
    settings : OtaSettings
    channel : ChannelDraw
        The round's channels, aligned with ``values``.
    values : sequence (per PIU) of sequences (per array) of np.ndarray
        Each PIU's update, full-shaped; only held entries are sent.
    held : same structure of bool np.ndarray, or None
        Which entries each PIU holds (``None``: all of them).
    noise_rng : np.random.Generator
        The receiver noise of this round.
    """
    num = channel.devices.size
    check_argument(len(values) == num, "values", f"{len(values)} updates for {num} PIUs")
    check_argument(num >= 1, "values", "at least one PIU must take part")
    num_arrays = len(values[0])
    shapes = [np.shape(a) for a in values[0]]
    if held is None:
        held = [[np.ones(s, dtype=bool) for s in shapes] for _ in range(num)]
    check_argument(len(held) == num, "held", f"{len(held)} masks for {num} PIUs")
    for k in range(num):
        check_argument(
            len(values[k]) == num_arrays, "values", f"PIU {k} sends {len(values[k])} arrays, not {num_arrays}"
        )
        check_argument(len(held[k]) == num_arrays, "held", f"PIU {k} has {len(held[k])} masks, not {num_arrays}")
        for a in range(num_arrays):
            check_argument(np.shape(values[k][a]) == shapes[a], "values", f"PIU {k} array {a} has another shape")
            check_argument(np.shape(held[k][a]) == shapes[a], "held", f"PIU {k} mask {a} has another shape")
    senders = [int(k) for k in np.flatnonzero(channel.transmits)]
    sqrt_rho = math.sqrt(settings.rho)
    estimate, counts, offsets, scales = [], [], [], []
    energy = np.zeros(num, dtype=np.float64)
    entries = np.zeros(num, dtype=np.int64)
    channel_uses = 0
    for a in range(num_arrays):
        us = [np.asarray(values[k][a], dtype=np.float64) for k in senders]
        hs = [np.asarray(held[k][a], dtype=np.bool_) for k in senders]
        offset, scale = _normalisation(us, hs) if settings.normalise else (0.0, 1.0)
        received = np.zeros(shapes[a], dtype=np.float64)
        count = np.zeros(shapes[a], dtype=np.int64)
        for k, u, h in zip(senders, us, hs, strict=True):
            s = np.where(h, (u - offset) / scale, 0.0)
            received += sqrt_rho * channel.coefficient[k] * s
            count += h.astype(np.int64)
            energy[k] += settings.rho * float(np.sum(s**2)) / float(abs(channel.estimate[k]) ** 2)
            entries[k] += int(np.count_nonzero(h))
        listened = count > 0
        noise = noise_rng.standard_normal(shapes[a]) * math.sqrt(settings.noise_var)
        received += np.where(listened, noise, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(listened, scale * received / (sqrt_rho * np.maximum(count, 1)) + offset, 0.0)
        estimate.append(mean)
        counts.append(count)
        offsets.append(offset)
        scales.append(scale)
        channel_uses += int(np.count_nonzero(listened))
    power = {int(channel.devices[k]): (float(energy[k] / entries[k]) if entries[k] else 0.0) for k in senders}
    return OtaResult(estimate, counts, channel, offsets, scales, power, channel_uses)


class OverTheAirChannel:
    """The analog uplink of a run: seeded channels and noise per round, :func:`superpose` per round.

    Parameters
    ----------
    settings : OtaSettings
    seed : int
        The run seed.
    """

    def __init__(self, settings: OtaSettings, seed: int) -> None:
        self.settings = settings
        self.seed = check_seed(seed)

    def aggregate(
        self,
        server_round: int,
        devices: Sequence[int],
        values: Sequence[Sequence[np.ndarray]],
        held: Sequence[Sequence[np.ndarray]] | None = None,
    ) -> OtaResult:
        """Round ``server_round``: ``devices`` transmit ``values`` (their held entries) at once."""
        channel = draw_channel(self.settings, self.seed, server_round, devices)
        noise = derive_rng(self.seed, NOISE_STREAM, int(server_round))
        return superpose(self.settings, channel, values, held, noise)
