#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Restore time against guest size: stock, kvmsave eager, kvmsave lazy.

Reads the JSON of one bench/bench.py run per guest size (--json, each
with a stock row, a kvmsave eager row and a kvmsave "lazy" row), prints
the table of docs/performance.md ("Lazy restore") and draws the chart
(python3-matplotlib), as SVG:

    /usr/bin/python3 bench/restore_chart.py --svg docs/restore-by-size.svg \\
        bench/results/DATE-lazy/*.json
"""
import argparse
import json
import math
import sys

GIB = 1024
TITLE = 'Restore time by guest size (TCG guest, caches dropped)'


def rows_of(res):
    """(stock row, best eager kvmsave row or None, lazy row) of one run,
    by label. A run may lack an eager row: three 8 GiB guests at once do
    not fit a 24 GiB machine."""
    rows = res['rows']
    stock = min((k for k, r in rows.items() if r['driver'] == 'stock'),
                key=lambda k: rows[k]['restore_s'])
    eager = min((k for k, r in rows.items() if r['driver'] == 'kvmsave' and not r['lazy']),
                key=lambda k: rows[k]['restore_s'], default=None)
    lazy = next(k for k, r in rows.items() if r['lazy'])
    return stock, eager, lazy


def seconds(x):
    """X as the table shows it: '-' for a row the run lacks."""
    return '-' if math.isnan(x) else f'{x:.2f}'


def table(runs):
    hdr = ('RAM GiB', 'start --paused', 'stock restore', 'eager', 'lazy runs',
           'lazy done', 'heartbeat stock/eager/lazy', 'save stock/eager/lazy',
           'lazy x start', 'stock/lazy')
    out = ['| ' + ' | '.join(hdr) + ' |', '|' + '---|' * len(hdr)]
    for res in runs:
        stock, eager, lazy = rows_of(res)
        r = dict(res['rows'])
        r[None] = {'restore_s': math.nan, 'heartbeat_s': math.nan, 'save_s': math.nan}
        paused = res['start_paused_s']
        out.append('| ' + ' | '.join((
            f"{res['config']['memory_mib'] / GIB:g}",
            f'{paused:.2f}',
            f"{r[stock]['restore_s']:.2f}",
            f"{r[eager]['restore_s']:.2f} ({eager})" if eager else '-',

            f"{r[lazy]['restore_s']:.2f}",
            f"{r[lazy]['restore_done_s']:.2f}",
            '/'.join(seconds(r[k]['heartbeat_s']) for k in (stock, eager, lazy)),
            '/'.join(seconds(r[k]['save_s']) for k in (stock, eager, lazy)),
            f"{r[lazy]['restore_s'] / paused:.2f}",
            f"{r[stock]['restore_s'] / r[lazy]['restore_s']:.1f}")) + ' |')
    return '\n'.join(out)


def chart(runs, path, title=TITLE):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    xs = [res['config']['memory_mib'] / GIB for res in runs]
    series = {
        'stock libvirt restore': [], 'kvmsave eager restore': [],
        'kvmsave lazy: guest runs': [], 'kvmsave lazy: last page in': [],
        "libvirt's own start --paused": [],
    }
    for res in runs:
        stock, eager, lazy = rows_of(res)
        r = res['rows']
        series['stock libvirt restore'].append(r[stock]['restore_s'])
        series['kvmsave eager restore'].append(r[eager]['restore_s'] if eager else math.nan)
        series['kvmsave lazy: guest runs'].append(r[lazy]['restore_s'])
        series['kvmsave lazy: last page in'].append(r[lazy]['restore_done_s'])
        series["libvirt's own start --paused"].append(res['start_paused_s'])
    styles = ['o-', 's-', 'D-', 'D--', 'x:']
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (label, ys), style in zip(series.items(), styles):
        ax.plot(xs, ys, style, label=label)
    ax.set_xlabel('guest RAM, GiB (3/4 of it random data)')
    ax.set_ylabel('seconds')
    ax.set_xticks(xs)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, metadata={'Date': None})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--svg', help='write the chart here')
    p.add_argument('--title', default=TITLE, help=f'the chart\'s title (default: {TITLE})')
    p.add_argument('json', nargs='+', help="bench.py --json files, one per size")
    a = p.parse_args(argv)
    runs = []
    for path in a.json:
        with open(path) as fh:
            runs.append(json.load(fh))
    runs.sort(key=lambda res: res['config']['memory_mib'])
    print(table(runs))
    if a.svg:
        chart(runs, a.svg, a.title)
    return 0


if __name__ == '__main__':
    sys.exit(main())
