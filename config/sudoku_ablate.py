# The ablation table's base (ablate.py): the quick start's model (hidden 64, MLP-t, T=2, n=2, N_sup=8)
# on 6x6 Sudoku, every row the same number of optimiser steps.
#   python prepare_sudoku.py --size 6 --difficulty medium && python ablate.py
# Why 6x6 (12-13 of 36 cells given): an example costs 2.2x less than a 9x9 one, and full TRM learns it
# within a budget where all rows x 2 seeds fit in an hour on 2 cores, without reaching 100% (which
# would hide the rows' differences). Measured, one core: 47% exact after 372 of 700 steps, 95% at 700.
import os  # __file__ is this file's path: sudoku_cpu.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_cpu.py")).read())
data_dir = "data/sudoku-6x6-medium"
out_dir = "out-ablate"
global_batch_size = 64    # the base the table was measured with: batch 64, all 8 supervision steps in
halt_max_steps = 8        # training (the quick start now trains with 2 at batch 16)
eval_steps = 0
eval_max_batches = 4
log_interval = 25
max_steps = 500           # every row: this many optimiser steps, also the lr cosine's horizon
max_minutes = 0.0         # equal steps, not equal time: ablate.py reports each row's minutes beside it
clock_schedule = False    # ... and no clock
eval_interval = 20        # epochs: a pass of 940 steps, longer than the run: one evaluation, the final, on all 1000
ckpt_interval = 100       # a killed table resumes from here
