# The quick start's stretch: medium 9x9 Sudoku (26-30 givens, about a third need a guess) in 10 minutes.
#   python prepare_sudoku.py --difficulty medium && python train.py config/sudoku_cpu_medium.py
import os  # __file__ is this file's path: sudoku_cpu.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_cpu.py")).read())
data_dir = "data/sudoku-medium"
out_dir = "out-sudoku-cpu-medium"
# The quick start's recipe: n=2, 2 supervision steps per puzzle in training (N_sup=2), batch 16; N_sup=2
# was found here first. With N_sup=16 a puzzle stays in 16 consecutive batches, and at batch 64 and lr 3e-3
# the weights learn the puzzles in flight rather than the rules: 36-43% of training puzzles exact at
# step 325, 0.4% of held-out ones (measured). Measured, AVX2 2-core: at batch 64, N_sup=16 0.0% exact after
# 589 steps, N_sup=4 5% and N_sup=2 27% after 560 (n=4), N_sup=2 with n=2 60-62% in the 8 minutes;
# at batch 16, 69.3% in the 8 minutes.
eval_steps = 16           # N_sup at evaluation: medium puzzles gain from 16 (sample.py --steps=16 likewise)
max_minutes = 8.0         # its final evaluation (16 steps x 1000 puzzles) takes under a minute on 2 cores
max_steps = 0             # no cap: as many steps as the 8 minutes hold on this machine, the cosine ending on
                          # the clock (clock_schedule, as in sudoku_cpu.py): bf16 CPUs get ~4x the steps of AVX2 ones
