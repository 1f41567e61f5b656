#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""How save and restore times grow with the guest's dirty memory.

Runs bench/bench.py once per data size (--sizes, MiB of --fill data the
guest writes into its RAM; the guest gets --headroom MiB more RAM than its
data), each run with its own JSON in --out, then fits every sample of each
driver to  time = fixed + slope * GiB  (least squares over all repeats of
all sizes) and prints one table: the medians per size, the slope (seconds
per GiB of data), the fixed cost (seconds at zero data), R^2, and the
largest relative distance of a size's median from the line.

    bench/run ...            # once, so that kvmsave and the guest are built
    /usr/bin/python3 bench/scaling.py --sizes 512,1024,2048,4096 --repeat 3 \\
        --reap --out bench/results/DATE-scaling

An existing JSON in --out for a size is reused (--rerun to measure again),
so a series can be resumed.  Run as root on an otherwise idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def fit(points):
    """Least squares line through (x, y) points: (fixed, slope, r2)."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx = statistics.fmean(xs)
    my = statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    fixed = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (fixed + slope * x)) ** 2 for x, y in points)
    return fixed, slope, (1 - ss_res / ss_tot) if ss_tot else 1.0


def run_size(args, data, path):
    argv = ['/usr/bin/python3', os.path.join(HERE, 'bench.py'),
            '--memory', str(data + args.headroom), '--data', str(data),
            '--fill', args.fill, '--repeat', str(args.repeat),
            '--formats', args.formats, '--disk-runs', '1',
            '--dir', args.dir, '--json', path]
    if args.reap:
        argv.append('--reap')
    if args.run:
        argv += ['--run', args.run]
    print(f'scaling: {data} MiB of data: {" ".join(argv)}', file=sys.stderr, flush=True)
    with open(path[:-len('.json')] + '.out', 'w') as out:
        subprocess.run(argv, check=True, stdout=out)


def table(results):
    """results: {data_mib: bench JSON}.  Returns the printed lines."""
    sizes = sorted(results)
    labels = list(results[sizes[0]]['rows'])
    lines = []
    first = results[sizes[0]]
    c = first['config']
    lines.append(f"{c['fill']} data in guests with {c['memory_mib'] - c['data_mib']} MiB more RAM "
                 f"than data; medians of {c['repeat']} repeats per size; "
                 + ('QEMU reaped by the bench (--reap); ' if c['reap'] else '')
                 + f"kvmsave {c['kvmsave_tree']}")
    head = ['', 'step'] + [f'{s} MiB' for s in sizes] + ['s/GiB', 'fixed s', 'R^2', 'off line']
    rows = []
    for label in labels:
        for step in ('save_s', 'restore_s'):
            pts = [(s / 1024, x[step]) for s in sizes for x in results[s]['samples'][label]]
            fixed, slope, r2 = fit(pts)
            meds = [results[s]['rows'][label][step] for s in sizes]
            off = max(abs(m - (fixed + slope * s / 1024)) / m for s, m in zip(sizes, meds))
            rows.append([label, step[:-2]] + [f'{m:.2f}' for m in meds]
                        + [f'{slope:.3f}', f'{fixed:.2f}', f'{r2:.3f}', f'{off * 100:.0f}%'])
    for label in labels:
        rows.append([label, 'image MiB'] +
                    [f"{results[s]['rows'][label]['image_bytes'] / 2**20:.0f}" for s in sizes]
                    + ['', '', '', ''])
        rows.append([label, 'RSS MiB'] +
                    [f"{max(results[s]['rows'][label]['save_rss_mib'], results[s]['rows'][label]['restore_rss_mib']):.0f}"
                     for s in sizes] + ['', '', '', ''])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: '  '.join(v.ljust(widths[i]) if i < 2 else v.rjust(widths[i])  # noqa: E731
                              for i, v in enumerate(r))
    lines.append(fmt(head))
    lines.extend(fmt(r) for r in rows)
    lines.append('s/GiB and fixed s: least squares over every sample of every size; '
                 'off line: largest |median - line| / median; RSS: peak of save and restore '
                 '(the client process, virsh or Python)')
    noise = sorted({n for r in results.values() for n in r.get('noise', [])})
    if noise:
        lines.append('warning: ' + ', '.join(noise))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', default='512,1024,2048,4096',
                   help='MiB of data per run, comma-separated (default 512,1024,2048,4096)')
    p.add_argument('--headroom', type=int, default=512,
                   help='guest RAM beyond its data, MiB (default 512)')
    p.add_argument('--fill', default='random')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--formats', default='raw')
    p.add_argument('--dir', default='/var/tmp')
    p.add_argument('--reap', action='store_true')
    p.add_argument('--run', help="the build tree's ./run (default: bench.py's)")
    p.add_argument('--out', required=True, help='directory for one JSON (and output) per size')
    p.add_argument('--rerun', action='store_true', help='measure sizes that have a JSON again')
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    results = {}
    for data in [int(x) for x in args.sizes.split(',')]:
        path = os.path.join(args.out, f'{args.fill}-{data}.json')
        if args.rerun or not os.path.exists(path):
            run_size(args, data, path)
        with open(path) as fh:
            results[data] = json.load(fh)
    lines = table(results)
    print('\n'.join(lines))
    with open(os.path.join(args.out, f'{args.fill}-table.txt'), 'w') as fh:
        fh.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
