# The CPU quick start for mazes: a small MLP-t TRM learns to draw the path through generated 7x7 mazes.
#   python prepare_maze.py --size 7 --braid 0 --generate 10000 --num_test 500 && python train.py config/maze_cpu.py
# 7x7 perfect mazes (one path between any two cells, 7-30 steps from S to G) are the smallest that still
# need a search: on 2 shared CPU cores, 9x9 mazes were still at the copy-the-input plateau after 250 steps
# (measured), and the fewer tokens the more steps per minute.
data_dir = "data/maze-7x7"
out_dir = "out-maze-cpu"
# model: as config/sudoku_cpu.py, the paper's MLP-t TRM narrowed and shortened for a laptop. MLP-t
# mixes along the sequence with learned weights, so it can read a cell's 4 neighbours directly; the
# attention variant (2 heads, RoPE) learned more slowly here and, at batch 32, diverged (measured).
hidden_size = 64
mlp_t = True
pos_encodings = "none"
puzzle_emb_ndim = 64      # one identifier for all mazes: a single learned prefix vector
puzzle_emb_len = 1
H_cycles = 2              # T
L_cycles = 2              # n
halt_max_steps = 8
# schedule: small batches learn most per example; the clock stops training on slow machines
global_batch_size = 64
max_steps = 1600
max_minutes = 8.5
eval_interval = 2         # epochs of 10000 mazes: an evaluation every 312 steps
eval_max_batches = 4      # ... on 256 test mazes; the final one on all 500
log_interval = 25
ckpt_interval = 200
lr = 3e-3
lr_warmup_steps = 100
lr_min_ratio = 0.1
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema_rate = 0.99
compile = False           # as in config/sudoku_cpu.py
dtype = "float32"
