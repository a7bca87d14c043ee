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
# schedule: small batches learn most per example; the clock stops training on slow machines
global_batch_size = 64
max_steps = 1600          # at most: CPUs with fast bf16 get there in 3-6 minutes
max_minutes = 8.5
clock_schedule = True     # the lr cosine ends when the clock does, on every CPU. Measured, AVX2, 900 steps:
                          # 96.2% exact with the cosine ending there, 93.9% at 916 with a fixed 1600-step one
eval_interval = 8         # epochs of 3000 puzzles: an evaluation every 375 steps
eval_max_batches = 4      # ... on 256 test puzzles; the final one on all 1000
log_interval = 25
ckpt_interval = 200
lr = 3e-3                # measured: 3e-3 reached 97.5% where 1e-3 reached 78.5% in the same time
lr_warmup_steps = 100
lr_min_ratio = 0.1
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema_rate = 0.99
compile = False           # on CPU, torch.compile did not beat eager for this model (measured)
dtype = "auto"            # bf16 where a bf16 matmul measures faster (AMD Zen 5: 98.5% in 2.7 min, measured),
                          # float32 elsewhere (AVX2: 97.5% in 9.3 min, measured)
