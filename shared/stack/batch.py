"""``python -m shared.stack.batch COMMAND [ARG]...``: run a command under Linux's ``SCHED_BATCH`` policy.

:func:`shared.stack.local.producer_argv` starts granian this way, so ``redis-archive serve``'s
processes and all their threads (granian's Rust threads, the app's Python threads) inherit the
policy. A ``SCHED_BATCH`` thread that wakes up does not preempt the thread running on its CPU:
it runs when that one's turn ends or it sleeps. A served request wakes several threads in turn
(granian's I/O thread, a Python thread, that thread again on Redis' reply); under the default
policy, on a busy machine, each wake-up preempted whichever thread ran. ``POST /queue/members``
on 2 cores (wrk, 16 connections, 8 s runs, 3 alternating rounds, granian 3 x 2):

- context switches per request 8.1 (4.1 involuntary) -> 4.0 (1.3 involuntary);
- the server's CPU per request 320 -> 265 us;
- 4,883-5,006 -> 5,870-6,024 requests a second; p50 3.0 -> 2.3 ms, p99 9.1 -> 8.2 ms in one
  run each (``bench.http``'s p99: 8-9 -> 9-11 ms).

The policy only changes who waits when threads compete for a CPU: on an idle machine nothing
changes. ``SERVER_SCHED_BATCH=0`` starts the server under the default policy. Where the policy
does not exist (not Linux) or is refused (a sandbox's seccomp filter), the command runs as it is.
"""

from __future__ import annotations

import os
import sys


def use_batch_policy() -> str | None:
    """Put this process under ``SCHED_BATCH`` (its priority unchanged); returns why not, or ``None``."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return "this system has no SCHED_BATCH"
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        return f"SCHED_BATCH refused: {exc}"
    return None


def main(argv: list[str] | None = None) -> None:
    """Set the policy, then replace this process with ``argv`` (default: the command line's)."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        sys.exit("usage: python -m shared.stack.batch COMMAND [ARG]...")
    why_not = use_batch_policy()
    if why_not is not None:
        print(f"{command[0]}: default scheduling policy ({why_not})", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
