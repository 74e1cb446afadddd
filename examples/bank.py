# SPDX-License-Identifier: MIT
"""A bank on the simulation runtime: transfers between accounts, in virtual time.

Each account is an actor (its balance changes only by its messages).
Transfers arrive over time (Poisson arrivals: each is an Action with a
``delay``) and are served by tellers (a Site subclass). A transfer asks both
accounts to hold for it for the time it takes (``runtime.sleep``, virtual
seconds); one that finds an account held by another transfer fails with
``Contention`` and is retried with backoff, on a timer, in virtual time. One that finds too little
money is refused for good (a dead letter). Now and then a teller faints
(``CrashError``): its supervisor restarts it and the transfer goes back to
the queue. Audit hooks in Life record every attempt and every commit. At the
end the money is counted: not one unit may be created or lost.

Run it:   python examples/bank.py --accounts 1000 --transfers 20000 --seed 7

The same seed prints the same figures and the same event-log digest every
time. With matplotlib installed (``pip install 'echo_actors[plot]'``) it
also saves a chart (``--chart``, default ``bank.png``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pykka

from echo_actors import Action, CrashError, EchoError, Fate, Plan, RetryPolicy, Sequence, Signature
from echo_actors.life import Life
from echo_actors.runtime import Runtime, bind_actor, get_runtime
from echo_actors.site import Site

START_BALANCE = 1_000
"""Each account's opening balance (integer units)."""


class Transfer(msgspec.Struct, frozen=True):
    """A transfer's content: who pays whom, how much, and how long the teller takes."""

    number: int
    source: int
    target: int
    amount: int
    work: float


class Contention(Exception):
    """An account is locked by another transfer: worth another attempt later."""


class InsufficientFunds(EchoError):
    """The source account cannot pay: refused for good (not retried)."""

    kind = "funds"


class Account(pykka.Actor):
    """One account as an actor: its balance and the transfer holding it, if any."""

    def __init__(self, balance: int) -> None:
        super().__init__()
        self.balance = balance
        self.holder: int | None = None

    def hold(self, number: int) -> bool:
        """Hold the account for transfer ``number``; False if another transfer holds it."""
        if self.holder is None:
            self.holder = number
        return self.holder == number

    def release(self, number: int) -> None:
        """Let go of the account, if transfer ``number`` holds it."""
        if self.holder == number:
            self.holder = None

    def withdraw(self, amount: int) -> bool:
        """Take ``amount`` out; False (and nothing taken) if the balance is too low."""
        if self.balance < amount:
            return False
        self.balance -= amount
        return True

    def deposit(self, amount: int) -> None:
        """Put ``amount`` in."""
        self.balance += amount

    def get_balance(self) -> int:
        """The balance now."""
        return self.balance


@dataclass
class Bank:
    """The model: account actors, the event log (virtual time, kind, transfer, attempt)."""

    runtime: Runtime
    accounts: list[pykka.ActorProxy[Any]]
    time_scale: float = 1.0
    log: list[tuple[float, str, int, int]] = field(default_factory=list)
    audited: int = 0
    crashes: int = 0
    opened: float = 0.0

    def __post_init__(self) -> None:
        self.opened = self.runtime.monotonic()

    def now(self) -> float:
        """Seconds since the bank opened, on the runtime's clock."""
        return self.runtime.monotonic() - self.opened

    def record(self, kind: str, number: int, attempt: int = 0) -> None:
        """Append an event to the log, stamped with the runtime's clock."""
        self.log.append((round(self.now(), 6), kind, number, attempt))

    def balances(self) -> list[int]:
        """Every account's balance, asked of the account actors."""
        return [balance for balance in pykka.get_all([a.get_balance() for a in self.accounts])]

    def total(self) -> int:
        """All the money in the bank."""
        return sum(self.balances())

    def transfer(self, order: Transfer) -> int:
        """Hold both accounts, take the time the work takes, move the money; returns it."""
        source, target = self.accounts[order.source], self.accounts[order.target]
        number = order.number
        if not source.hold(number).get():
            self.record("busy", number)
            raise Contention(f"transfer {number}: account {order.source} is busy")
        try:
            if not target.hold(number).get():
                self.record("busy", number)
                raise Contention(f"transfer {number}: account {order.target} is busy")
            if order.work and self.time_scale:
                self.runtime.sleep(order.work * self.time_scale)
            if not source.withdraw(order.amount).get():
                self.record("refused", number)
                raise InsufficientFunds(f"account {order.source} cannot pay {order.amount}")
            target.deposit(order.amount).get()
        finally:
            pykka.get_all([source.release(number), target.release(number)])
        return order.amount

    # Audit hooks (registered in Life; called by the Sites around each attempt)

    def audit_before(self, action: Action) -> None:
        """Before-hook: note the attempt."""
        self.record("attempt", action.content["number"], action.attempt)

    def audit_after(self, action: Action, result: Any) -> None:
        """After-hook: note the commit."""
        self.audited += 1
        self.record("commit", action.content["number"], action.attempt)


class Teller(Site):
    """A Site that faints now and then (a crash its supervisor restarts)."""

    crash_rate = 0.0
    bank: Bank | None = None

    def __init__(self, site_index: int, site_core: Any) -> None:
        super().__init__(site_index, site_core)
        self.teller_random = site_core.runtime.random(f"teller-{site_index}")

    def receive(self, action: Action, life: Life) -> Any:
        if self.crash_rate and self.teller_random.random() < self.crash_rate:
            if self.bank is not None:
                self.bank.crashes += 1
                self.bank.record("crash", action.content["number"], action.attempt)
            raise CrashError(f"teller {self.site_index} fainted")
        return super().receive(action, life)


@dataclass
class Report:
    """What a run of the bank did."""

    runtime: str
    accounts: int
    transfers: int
    committed: int
    refused: int
    gave_up: int
    retried: int
    crashes: int
    money_before: int
    money_after: int
    virtual_seconds: float
    wall_seconds: float
    events: int
    digest: str
    log: list[tuple[float, str, int, int]]
    balances: list[int]
    kernel_steps: int = 0  # simulation only: greenlet switches plus timers run

    @property
    def conserved(self) -> bool:
        """Whether not one unit was created or lost."""
        return self.money_before == self.money_after


def run(
    accounts: int = 100,
    transfers: int = 1_000,
    seed: int = 0,
    *,
    runtime: str = "simulation",
    sites: int = 16,
    crash_rate: float = 0.005,
    time_scale: float = 1.0,
) -> Report:
    """Run the bank and return its report.

    ``time_scale`` multiplies every model duration (work, arrivals, retry
    backoff): 1 on the simulation runtime (virtual seconds cost nothing); on
    the thread runtime 0 removes the waits, a small value shortens them.
    """
    if accounts < 2:
        raise ValueError("a bank needs at least two accounts")
    if runtime == "simulation":
        from echo_actors.runtime import SimulationRuntime  # noqa: PLC0415

        rt: Runtime = SimulationRuntime(seed)
    else:
        rt = get_runtime(runtime)
    rng = random.Random(f"{seed}:bank")  # the same workload on every runtime
    account_class = bind_actor(Account, rt)
    refs = [account_class.start(START_BALANCE) for _ in range(accounts)]
    bank = Bank(rt, [ref.proxy() for ref in refs], time_scale)
    money_before = bank.total()
    policy = RetryPolicy(max_attempts=8, base=0.5 * time_scale, cap=60.0 * time_scale, jitter=0.5)
    plan = (
        Plan()
        .with_signature(Signature("transfer", Transfer, retry=policy))
        .with_function("transfer", bank.transfer)
        .build()
    )
    fate = Fate(sites=sites, max_restarts=1_000, restart_within=60.0, runtime=rt.name)
    life = Life(fate, runtime=rt)
    life.register_hook("audit_before", bank.audit_before)
    life.register_hook("audit_after", bank.audit_after)
    teller = type("Teller", (Teller,), {"crash_rate": crash_rate, "bank": bank})
    orders: list[Action] = []
    arrival = 0.0
    for number in range(transfers):
        arrival += rng.expovariate(20.0)  # about 20 transfers a second
        source, target = rng.sample(range(accounts), 2)
        amount, work = rng.randint(1, 300), round(rng.uniform(0.2, 2.0), 3)
        order = Transfer(number, source, target, amount, work)
        orders.append(Action(
            "transfer", msgspec.to_builtins(order), delay=arrival * time_scale,
            hooks=("audit_before",), after=("audit_after",),
        ))
    started, bank.opened = time.perf_counter(), rt.monotonic()
    sequence = Sequence(plan, life=life, site=teller, sites=sites, fate=fate, runtime=rt)
    committed = refused = gave_up = 0
    with sequence:
        for future in sequence.submit_many(orders):
            try:
                future.get()
                committed += 1
            except InsufficientFunds:
                refused += 1
            except EchoError:
                gave_up += 1
        retried = sequence.stats().retried
    virtual = bank.now()
    wall = time.perf_counter() - started
    balances = bank.balances()
    for ref in refs:
        ref.stop()
    life.stop()
    digest = hashlib.sha256(repr(bank.log).encode()).hexdigest()[:16]
    return Report(
        runtime=rt.name, accounts=accounts, transfers=transfers, committed=committed,
        refused=refused, gave_up=gave_up, retried=retried, crashes=bank.crashes,
        money_before=money_before, money_after=sum(balances), virtual_seconds=virtual,
        wall_seconds=wall, events=len(bank.log), digest=digest, log=bank.log,
        balances=balances,
        kernel_steps=getattr(getattr(rt, "kernel", None), "steps", 0),
    )


def chart(report: Report, path: str) -> bool:
    """Save commits over virtual time and the final balances; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    commits = [when for when, kind, _, _ in report.log if kind == "commit"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=80)
    left.plot(commits, range(1, len(commits) + 1))
    left.set_xlabel("virtual seconds")
    left.set_ylabel("transfers committed")
    right.hist(report.balances, bins=40)
    right.set_xlabel("final balance")
    right.set_ylabel("accounts")
    figure.suptitle(f"bank: {report.accounts} accounts, {report.transfers} transfers")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> Report:
    """Parse the arguments, run the bank, print a summary (and save a chart)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--transfers", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=None, help="default: ECHO_SEED, else 0")
    parser.add_argument("--sites", type=int, default=16)
    parser.add_argument("--crash-rate", type=float, default=0.005)
    parser.add_argument("--runtime", choices=["simulation", "thread", "gevent"],
                        default="simulation")
    parser.add_argument("--time-scale", type=float, default=None,
                        help="multiplies model durations (default: 1 on simulation, 0 otherwise)")
    parser.add_argument("--chart", default="bank.png", help="where to save the chart ('' : none)")
    args = parser.parse_args(argv)
    scale = args.time_scale if args.time_scale is not None else (
        1.0 if args.runtime == "simulation" else 0.0)
    seed = args.seed if args.seed is not None else (Fate.load().seed or 0)
    report = run(args.accounts, args.transfers, seed, runtime=args.runtime,
                 sites=args.sites, crash_rate=args.crash_rate, time_scale=scale)
    print(f"bank on {report.runtime}: {report.accounts} accounts, {report.transfers} transfers")
    print(f"  committed {report.committed}, refused (funds) {report.refused}, "
          f"gave up (contention) {report.gave_up}")
    print(f"  retries {report.retried}, teller crashes {report.crashes}")
    print(f"  money before {report.money_before}, after {report.money_after}: "
          f"{'conserved' if report.conserved else 'NOT CONSERVED'}")
    print(f"  {report.virtual_seconds:.1f} s of model time in {report.wall_seconds:.3f} s of wall "
          f"time; {report.events} events, log digest {report.digest}")
    print(chart_line(report, args.chart))
    return report


def chart_line(report: Report, path: str) -> str:
    """One line saying where the chart went, or why there is none."""
    if not path:
        return "  no chart (--chart '')"
    if chart(report, path):
        return f"  chart saved to {os.path.abspath(path)}"
    return ("  no chart: matplotlib is not installed "
            "(pip install 'echo_actors[plot]', or pip install -e '.[plot]' in a checkout)")


def quiet_logs() -> None:
    """The application decides what is logged: errors only, pykka's tracebacks hidden."""
    logging.getLogger("pykka").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    quiet_logs()
    main()
