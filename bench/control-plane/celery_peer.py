"""The Celery peer of bench/control-plane/run.sh: what a team would write without Verdict.

One task per item (Redis broker). The task does what Verdict's synthetic judge does in the
model's place -- k samples with the responses shuffled per sample, principles and a
critique of BENCH_TEXT bytes, scores in a score block -- then sums the scores and writes
the item's verdict and its k sample rows to Postgres with psycopg in one transaction
(upserts, so a redelivery writes the same rows). Acknowledged after the task returns
(acks_late), as Verdict acknowledges only after the commit.

    celery -A celery_peer worker --concurrency 2        # the workers
    python celery_peer.py submit items.jsonl            # the producer
"""
import json
import os
import random
import re
import sys
import time
from datetime import datetime, timezone

import psycopg
from celery import Celery

app = Celery("celery_peer", broker=os.environ.get("CELERY_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=64,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

K = int(os.environ.get("BENCH_K", "8"))
TEXT = int(os.environ.get("BENCH_TEXT", "300"))
FILLER = "The response states its claim, supports it with a worked example and names the case where it fails. "
_conn = None


def conn():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["CELERY_DATABASE"])
    return _conn


def judgement(rng, shown):
    scores = [rng.randint(1, 10) for _ in range(shown)]
    body = (FILLER * (TEXT // len(FILLER) + 1))[: max(TEXT - 40, 0)]
    principles, critique = body[: len(body) // 3], body[len(body) // 3 :]
    raw = f"Principles: {principles}\nAnalysis: {critique}\nScores: \\boxed{{{', '.join(map(str, scores))}}}"
    return raw, principles, critique


SCORES = re.compile(r"\\boxed\{([^}]*)\}")


@app.task(name="label")
def label(item, enqueued_at):
    responses = [item["chosen"], item["rejected"]] if "chosen" in item else item["responses"]
    n = len(responses)
    rng = random.Random(item["id"])
    samples, summed = [], [0] * n
    for index in range(K):
        perm = list(range(n))
        rng.shuffle(perm)
        raw, principles, critique = judgement(rng, n)
        shown = [int(x) for x in SCORES.findall(raw)[-1].split(",")]
        scores = [0] * n
        for j, s in enumerate(shown):
            scores[perm[j]] = s
        for i, s in enumerate(scores):
            summed[i] += s
        samples.append((item["id"], index, perm, principles, critique, scores, "valid", len(raw) // 4, raw))
    winner = max(range(n), key=lambda i: summed[i])
    margin = summed[winner] - max([s for i, s in enumerate(summed) if i != winner] or [0])
    c = conn()
    with c.transaction():
        with c.cursor() as cur:
            cur.execute(
                "INSERT INTO verdicts (item_id, summed, winner, margin, valid, agreement, enqueued_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (item_id) DO UPDATE SET summed = EXCLUDED.summed, winner = EXCLUDED.winner, margin = EXCLUDED.margin",
                (item["id"], summed, winner, margin, K, 1.0, datetime.fromtimestamp(enqueued_at, timezone.utc)),
            )
            cur.executemany(
                "INSERT INTO samples (item_id, sample_index, permutation, principles, critique, scores, status, completion_tokens, raw)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (item_id, sample_index) DO UPDATE SET raw = EXCLUDED.raw, scores = EXCLUDED.scores",
                samples,
            )


def submit(path):
    """Send one task per line, through one producer connection (Celery's bulk idiom)."""
    sent = 0
    with open(path) as f, app.producer_or_acquire() as producer:
        for line in f:
            label.apply_async((json.loads(line), time.time()), producer=producer)
            sent += 1
    print(f"{sent} tasks sent", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "submit":
        submit(sys.argv[2])
    else:
        sys.exit(__doc__)
