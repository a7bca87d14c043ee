# The CPU quick start for mazes: a small MLP-t TRM learns to draw the path through generated 7x7 mazes.
#   python prepare_maze.py --size 7 --braid 0 --generate 10000 --num_test 500 && python train.py config/maze_cpu.py
# 7x7 perfect mazes (one path between any two cells, 7-30 steps from S to G) are the smallest that still
# need a search: on 2 shared CPU cores, 9x9 mazes were still at the copy-the-input plateau after 250 steps
# (measured), and the fewer tokens the more steps per minute.
# The model and schedule are config/sudoku_cpu.py's: the paper's MLP-t TRM narrowed and shortened for a
# laptop. MLP-t mixes along the sequence with learned weights, so it can read a cell's 4 neighbours
# directly; the attention variant (2 heads, RoPE) learned more slowly here and, at batch 32, diverged
# (measured).
import os  # __file__ is this file's path: sudoku_cpu.py is found from any working directory
exec(open(os.path.join(os.path.dirname(__file__), "sudoku_cpu.py")).read())
data_dir = "data/maze-7x7"
out_dir = "out-maze-cpu"
puzzle_emb_ndim = 64      # one identifier for all mazes: a single learned prefix vector
eval_interval = 2         # epochs of 10000 mazes: an evaluation every 312 steps
eval_max_batches = 4      # ... on 256 test mazes; the final one on all 500
dtype = "float32"         # the maze figures were measured in float32 ...
clock_schedule = False    # ... with the fixed 1600-step schedule ...
max_steps = 1600
global_batch_size = 64    # ... at batch 64 with all 8 supervision steps in training (the Sudoku quick start
halt_max_steps = 8        # now trains with 2 at batch 16; on mazes that is not measured)
eval_steps = 0
log_interval = 25
ckpt_interval = 200
