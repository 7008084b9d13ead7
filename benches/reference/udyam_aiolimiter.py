"""The script an ops team writes instead of bulkverify: the bench's reference client.

Verifies the Udyam numbers of a CSV against Deepvue's async API (submit, then poll until the
result) with aiohttp, pacing every request with aiolimiter at the configured rate, and on a 429
waiting a second and sending again, as such scripts do. It prints one JSON line: requests sent,
429s, rows verified.

    python3 udyam_aiolimiter.py BASE_URL INPUT.csv RATE_PER_SECOND [CONCURRENCY]

Needs `pip install aiohttp aiolimiter`.
"""

import asyncio
import csv
import json
import os
import sys

import aiohttp
from aiolimiter import AsyncLimiter


async def main(base, path, rate, concurrency):
    with open(path, newline="") as f:
        numbers = [row["udyam"] for row in csv.DictReader(f)]
    limiter = AsyncLimiter(rate, 1)
    counts = {"requests": 0, "rate_limited": 0, "verified": 0, "errors": 0}
    client_id = os.environ["DEEPVUE_CLIENT_ID"]
    secret = os.environ["DEEPVUE_CLIENT_SECRET"]

    async def call(session, method, url, **kw):
        while True:
            async with limiter:
                counts["requests"] += 1
                async with session.request(method, url, **kw) as r:
                    body = await r.text()
                    status = r.status
            if status == 429:
                counts["rate_limited"] += 1
                await asyncio.sleep(1)
                continue
            return status, body

    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("client_id", client_id)
        form.add_field("client_secret", secret)
        _, body = await call(session, "POST", f"{base}/v1/authorize", data=form)
        token = json.loads(body)["access_token"]
        headers = {"Authorization": f"Bearer {token}", "x-api-key": secret}
        slots = asyncio.Semaphore(concurrency)

        async def row(number):
            async with slots:
                status, body = await call(
                    session,
                    "POST",
                    f"{base}/v1/verification/async/post-udyam-details",
                    params={"udyam_aadhaar_number": number},
                    headers=headers,
                )
                if status >= 300:
                    counts["errors"] += 1
                    return
                request_id = json.loads(body)["request_id"]
            await asyncio.sleep(3)
            while True:
                async with slots:
                    status, body = await call(
                        session,
                        "GET",
                        f"{base}/v1/verification/async/get-udyam-details",
                        params={"request_id": request_id},
                        headers=headers,
                    )
                if status == 202:
                    await asyncio.sleep(1)
                    continue
                if status == 200:
                    counts["verified"] += 1
                else:
                    counts["errors"] += 1
                return

        await asyncio.gather(*(row(n) for n in numbers))
    print(json.dumps(counts))


if __name__ == "__main__":
    base, path, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    asyncio.run(main(base, path, rate, concurrency))
