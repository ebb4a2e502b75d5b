"""The NATS cluster's client URLs as a command's flag takes them."""

from __future__ import annotations

import argparse


def urls_arg(text: str) -> list[str]:
    """`--urls nats://a:4222,nats://b:4222`: one clear line when it is not that."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls or not all(url.startswith(("nats://", "tls://")) for url in urls):
        raise argparse.ArgumentTypeError(f"--urls must be nats:// URLs separated by commas, got {text!r}")
    return urls
