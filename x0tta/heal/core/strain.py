"""Is this agent itself starved? Its own event-loop lag and CPU, and the back-off they call for (sans-IO).

Why: a busy node (monitoring scripts, a cold process start, the agent's own fast polling) makes
the agent late. A late agent reads its neighbours' probes late and sends its own late, and a late
probe looks like a lossy link: the suspect stage then speeds up this node's OGMs and the loop
polls netlink ten times a second - more load on a node that is already short of CPU, which makes
the next probes later still. Measured in the lab before this existed: agents at 9-21 % of a node's
CPU on a mesh with no fault, opening incidents on healthy links (a metastable loop).

So the agent watches itself and backs off instead of amplifying load. Three signs, sampled once
per MAPE-K cycle:

* **event-loop lag**: how much later than planned the prober's rounds ran since the last sample
  (the prober sleeps ``probe_interval`` between rounds; a round that wakes more than
  ``strain_lag`` late means the process did not get the CPU when it asked for it);
* **CPU**: this process's CPU time over the wall time since the previous sample, smoothed over
  ``strain_window``; above ``strain_cpu`` of one CPU the agent is spending what the node needs for
  forwarding;
* **the node's CPU**: the share of the node's CPU time spent busy (every process and the kernel,
  from ``/proc/stat``), smoothed the same way; above ``strain_node_cpu`` every process on the node
  is scheduled late - the neighbouring agents' probes this one reads, and the kernel's answers, as
  much as its own. Measured: a 20-node lab guest 83 % busy had its agents suspect healthy links
  63 times in two minutes while none of them was late by its own measure.

While any sign was seen within the last ``strain_hold`` seconds the agent is *strained*, and:
one late probe no longer makes a link suspect (no faster OGMs on a suspicion; confirmed silent
loss, link down and every other symptom are unchanged: a dead link is still found, with the
kernel echo telling a late agent from a dead link), and the loop's fast cycle runs at
``strained_poll_interval`` instead of ``fast_poll_interval``. While the node's CPU is the sign
(:attr:`Strain.node_busy`), the echo's answers are read late too: a silent loss then takes twice
``silent_loss_run`` lost probes (0.6 s instead of 0.3 s at the default interval) before it is
acted on. ``x0tta status`` says so (``heal_strained``), and ``x0tta_heal_strained`` is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SPAN = 0.01  # s: CPU time over a shorter span is not sampled (clock granularity)


@dataclass
class Strain:
    """Feed it :meth:`sample` once per cycle; read :attr:`strained` and :attr:`reason`."""

    lag_limit: float  # s: a prober round this late is a sign
    cpu_limit: float  # share of one CPU (0.25 = 25 %), smoothed
    window: float  # s: smoothing time constant of the CPU share
    hold: float  # s: strained this long after the last sign
    node_limit: float = 0.0  # share of the node's CPU time busy, smoothed; 0: not a sign
    cpu_share: float = 0.0  # smoothed share of one CPU
    node_share: float = 0.0  # smoothed busy share of the node's CPUs
    worst_lag: float = 0.0  # s: the largest lag of the last sample
    until: float = 0.0
    node_until: float = 0.0  # the node-CPU sign alone: strained this long
    reason: str = ""
    _last: tuple[float, float] | None = None  # (now, cpu seconds) of the previous sample
    _node: tuple[float, float] | None = None  # (busy, total) CPU time of the node at the previous sample
    _now: float = 0.0

    def sample(self, now: float, cpu_s: float, lag_s: float, node: tuple[float, float] | None = None) -> bool:
        """``now``: a monotonic clock (s); ``cpu_s``: this process's CPU seconds so far; ``lag_s``:
        the largest lateness of a timer since the previous sample; ``node``: the node's busy and
        total CPU time so far (any unit; None where unknown). Returns :attr:`strained`."""
        if self._last is None or now - self._last[0] >= MIN_SPAN:  # a shorter span: noise
            if self._last is not None:
                dt = now - self._last[0]
                share = max(0.0, cpu_s - self._last[1]) / dt
                a = min(1.0, dt / self.window) if self.window > 0 else 1.0
                self.cpu_share += a * (share - self.cpu_share)
                if node is not None and self._node is not None and node[1] > self._node[1]:
                    busy = max(0.0, node[0] - self._node[0]) / (node[1] - self._node[1])
                    self.node_share += a * (min(1.0, busy) - self.node_share)
            self._last = (now, cpu_s)
            self._node = node
        self.worst_lag = max(0.0, lag_s)
        sign = ""
        if self.node_limit > 0 and self.node_share > self.node_limit:
            self.node_until = now + self.hold
        if self.worst_lag > self.lag_limit:
            sign = f"event loop {self.worst_lag * 1000:.0f} ms late"
        elif self.cpu_share > self.cpu_limit:
            sign = f"{self.cpu_share * 100:.0f} % of a CPU"
        elif self.node_limit > 0 and self.node_share > self.node_limit:
            sign = f"the node's CPU {self.node_share * 100:.0f} % busy"
        if sign:
            self.until = now + self.hold
            self.reason = sign
        self._now = now
        return self.strained

    @property
    def strained(self) -> bool:
        return self._last is not None and self._now < self.until

    @property
    def node_busy(self) -> bool:
        """The node's CPU sign was seen within the hold (whatever this agent's own lag and CPU):
        every process on the node, the kernel's echo replies read by this one included, runs late."""
        return self._last is not None and self._now < self.node_until
