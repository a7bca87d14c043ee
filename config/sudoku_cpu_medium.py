# The quick start's stretch: medium 9x9 Sudoku (26-30 givens, about a third need a guess) in 10 minutes.
#   python prepare_sudoku.py --difficulty medium && python train.py config/sudoku_cpu_medium.py
import os  # __file__ is this file's path: sudoku_cpu.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_cpu.py")).read())
data_dir = "data/sudoku-medium"
out_dir = "out-sudoku-cpu-medium"
# Few supervision steps per puzzle in training, many at test time. With N_sup=16 a puzzle stays in 16
# consecutive batches, and at this batch (64) and lr (3e-3) the weights learn the puzzles in flight
# rather than the rules: 36-43% of training puzzles exact at step 325, 0.4% of held-out ones (measured).
# N_sup=2 sees 8x the puzzles per step; the recursion then goes on for 16 steps at evaluation.
# Measured, AVX2 2-core: N_sup=16 0.0% exact after 589 steps; N_sup=4 5% and N_sup=2 27% after 560 (n=4);
# N_sup=2 with n=2 60-62% in the 8 minutes (936-997 steps).
halt_max_steps = 2        # N_sup in training
eval_steps = 16           # N_sup at evaluation (sample.py --steps=16 likewise)
L_cycles = 2              # n: n=2 learned faster per step than n=4 here (and on 6x6), and costs 0.6x
max_minutes = 8.0         # its final evaluation (16 steps x 1000 puzzles) takes under a minute on 2 cores
max_steps = 0             # no cap: as many steps as the 8 minutes hold on this machine, the cosine ending on
                          # the clock (clock_schedule, as in sudoku_cpu.py): bf16 CPUs get ~4x the steps of AVX2 ones
