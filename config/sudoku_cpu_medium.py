# The quick start's stretch: medium 9x9 Sudoku (26-30 givens, 29% need a guess) in 10 minutes.
#   python prepare_sudoku.py --difficulty medium && python train.py config/sudoku_cpu_medium.py
import os  # __file__ is this file's path: sudoku_cpu.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_cpu.py")).read())
data_dir = "data/sudoku-medium"
out_dir = "out-sudoku-cpu-medium"
L_cycles = 4              # medium puzzles need longer chains of deduction per step
halt_max_steps = 16
max_minutes = 8.0         # its final evaluation (16 steps x 1000 puzzles) takes about 80 s on 2 cores
max_steps = 0             # no fixed count: as many steps as the 8 minutes hold on this machine ...
clock_schedule = True     # ... with the cosine ending on the clock (bf16 CPUs get 4x the steps of AVX2 ones)
