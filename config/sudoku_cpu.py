# The CPU quick start: a small MLP-t TRM learns easy 9x9 Sudoku (36-40 givens) in minutes on 2 cores.
#   python prepare_sudoku.py && python train.py config/sudoku_cpu.py
data_dir = "data/sudoku-easy"
out_dir = "out-sudoku-cpu"
# model: the paper's MLP-t TRM, narrowed and shortened for a laptop
hidden_size = 64
mlp_t = True
pos_encodings = "none"
puzzle_emb_ndim = 64      # one identifier for all Sudoku: a single learned prefix vector
puzzle_emb_len = 1
H_cycles = 2              # T
L_cycles = 2              # n
halt_max_steps = 8
# schedule: stop by the clock, evaluating as we go
global_batch_size = 256
max_steps = 1000
max_minutes = 8.0
eval_interval = 100
log_interval = 10
ckpt_interval = 100
lr = 1e-3
lr_warmup_steps = 100
lr_min_ratio = 0.1
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema_rate = 0.99
