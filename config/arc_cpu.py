# The ARC CPU quick start: a small TRM learns 12 easy ARC-AGI-1 training tasks (flips, rotations, recolourings)
# from their demonstration pairs, 16 augmented versions each, and is scored (pass@K) on their test inputs.
#   python prepare_arc.py --source <directory holding arc-agi_training_challenges.json> --quick_start
#   python train.py config/arc_cpu.py
# The data sits on a 10x10 canvas instead of the paper's 30x30 (every grid of these tasks fits): attention
# over 100 cells instead of 900 is ~80x cheaper, which is what makes minutes on 2 cores enough.
data_dir = "data/arc-cpu"
out_dir = "out-arc-cpu"
# model: the paper's attention TRM, narrowed and shortened for a laptop
hidden_size = 64
num_heads = 4
mlp_t = False
pos_encodings = "rope"
puzzle_emb_ndim = 64      # one learned vector per augmented task (192 identifiers)
puzzle_emb_len = 1
H_cycles = 2              # T
L_cycles = 2              # n
halt_max_steps = 8
# schedule: an epoch is 12 puzzles (~39 examples); the clock stops training on slow machines
global_batch_size = 32
epochs = 100000
max_steps = 800           # the cosine schedule's length; on 2 busy cores the clock stops it first
max_minutes = 8.0
eval_interval = 250       # epochs: an evaluation (all 208 test examples) every ~300 steps
log_interval = 20
ckpt_interval = 250
lr = 1e-3
lr_warmup_steps = 50
lr_min_ratio = 0.1
weight_decay = 0.1
puzzle_emb_lr = 1e-2      # the paper's ARC setting
puzzle_emb_weight_decay = 0.1
ema_rate = 0.99
compile = False           # on CPU, torch.compile did not beat eager for the Sudoku quick start (measured)
dtype = "float32"
