#!/usr/bin/env python3
"""Plugin-host throughput: our C++ host vs an unmodified Go go-plugin host, same run, same connector.

For each connector (Go built with go-plugin vX, our C++ SDK connector, our Python SDK connector)
both hosts run the same Sync — 1 000-object pages of ~300-byte objects — with the Go host built with the same go-plugin
version as the Go connector. Neither host stores anything. Rounds alternate the order of the hosts;
the median of the rounds is reported, with the ratio C++/Go, and each SDK connector's throughput
against the Go v1.6.3 connector's through our host (the SDKs' goal: C++ >= Go, Python within 3x).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--object-bytes", type=int, default=300)
    a = ap.parse_args()

    b = os.path.abspath(a.build_dir)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    options = json.dumps({"pages": a.pages, "page_size": a.page_size, "object_bytes": a.object_bytes})
    connectors = [
        ("Go connector (go-plugin v1.6.3)", f"{b}/go-bin/connector-go-v1_6", "v1_6"),
        ("Go connector (go-plugin v1.8.0)", f"{b}/go-bin/connector-go-v1_8", "v1_8"),
        ("C++ SDK connector", f"{b}/tests/connectors/cpp/test_connector_cpp", "v1_6"),
        ("Python SDK connector", f"{b}/venv/bin/python {repo}/tests/connectors/python/test_connector.py",
         "v1_6"),
    ]
    print(f"# Plugin host throughput: {a.pages} pages x {a.page_size} objects of ~{a.object_bytes} B, "
          f"median of {a.rounds} rounds\n")
    print("| connector | host | objects/s | MB/s | peak RSS of host (MiB) |")
    print("|---|---|---:|---:|---:|")
    summary = []
    for label, command, go_version in connectors:
        hosts = {
            "tributary C++ host": [f"{b}/bench/bench_host", "--cmd", command, "--options", options],
            f"Go go-plugin host ({go_version.replace('_', '.')})": [
                f"{b}/go-bin/gohost-{go_version}", "--cmd", command, "--options", options],
        }
        results = {name: [] for name in hosts}
        for r in range(a.rounds):
            order = list(hosts.items()) if r % 2 == 0 else list(reversed(hosts.items()))
            for name, cmd in order:
                res = run(cmd)
                expected = a.pages * a.page_size
                if res["objects"] != expected:
                    sys.exit(f"{name} delivered {res['objects']} objects, expected {expected}")
                results[name].append(res)
        med = {}
        for name, rs in results.items():
            ops = statistics.median(x["objects_per_second"] for x in rs)
            mbs = statistics.median(x["bytes"] / x["seconds"] / 1e6 for x in rs)
            rss = statistics.median(x["max_rss_kb"] for x in rs) / 1024
            med[name] = (ops, rss)
            print(f"| {label} | {name} | {ops:,.0f} | {mbs:,.1f} | {rss:,.1f} |")
        (cpp_ops, cpp_rss), (go_ops, go_rss) = med.values()
        summary.append((label, cpp_ops / go_ops, cpp_rss / go_rss, cpp_ops))
    print("\n| connector | throughput C++/Go | peak memory C++/Go |")
    print("|---|---:|---:|")
    for label, speed, mem, _ in summary:
        print(f"| {label} | {speed:.2f}x | {mem:.2f}x |")
    go_ops = summary[0][3]
    print("\n| connector through our host | objects/s vs the Go v1.6.3 connector's |")
    print("|---|---:|")
    for label, _, _, ops in summary[2:]:
        print(f"| {label} | {ops / go_ops:.2f}x |")


if __name__ == "__main__":
    main()
