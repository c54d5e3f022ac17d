# Per-kernel breakdown of the first compress_layer call of each bench case from an ncu CSV
# (ncu --clock-control none --metrics gpu__time_duration.sum --csv kvtrim_cuda_bench, run with
# KVTRIM_BENCH_METHODS=snapkv KVTRIM_BENCH_REPS=1 KVTRIM_BENCH_WARM=0). Usage: ncu_summary.py FILE.csv
import csv, sys, re, collections
rows = [r for r in csv.reader([l for l in open(sys.argv[1]) if l.startswith('"') and not l.startswith('"ID"')])]
seq = [(re.sub(r'\(.*', '', r[4]).replace('void ', '').replace('kvtrim::', '').replace('cuda::', '').replace('detail::', ''), r[8], float(r[14].replace(',', '')) / 1000) for r in rows]
fills = [i for i, (k, g, t) in enumerate(seq) if 'fill_bf16' in k]
starts = fills[0::3]
for ci, s in enumerate(starts):
    e = starts[ci + 1] if ci + 1 < len(starts) else len(seq)
    case = seq[s + 3:e]
    first = [i for i, (k, g, t) in enumerate(case) if k.startswith('window_logits')]
    a = first[0]; b = first[1] if len(first) > 1 else len(case)
    print('case', ci, 'first compress call: %.1f us' % sum(t for _, _, t in case[a:b]))
    for k, g, t in case[a:b]: print('   %-45s %-13s %7.2f' % (k[:45], g, t))
