# The paper's ARC-AGI-1 run (44.6% pass@2 reported): the attention TRM with RoPE, hidden 512,
# T=3, n=4, 16 supervision steps; about 3 days on 4 H100 (bf16 + compile). Data: ARC-AGI-1 training and
# evaluation tasks plus ConceptARC, 1000 augmentations each, scored on the evaluation tasks' test inputs:
#   python prepare_arc.py --source <directory holding the arc-agi_*_challenges.json files>
#   torchrun --nproc_per_node=4 train.py config/arc1.py
# train.py's defaults are the paper's shared settings (batch 768, lr warm-up 2000 steps, EMA 0.999,
# stable-max, puzzle-embedding prefix of 16 tokens); this file names what ARC changes.
data_dir = "data/arc1concept-aug-1000"
out_dir = "out-arc1"
mlp_t = False
pos_encodings = "rope"
hidden_size = 512
H_cycles = 3              # T
L_cycles = 4              # n
lr = 1e-4
puzzle_emb_lr = 1e-2      # each of the ~876k identifiers is seen rarely: its embedding learns 100x faster
weight_decay = 0.1
puzzle_emb_weight_decay = 0.1
global_batch_size = 768
epochs = 100000
eval_interval = 10000     # epochs: ~960 groups x 3.8 examples / 768 per batch -> ~47k steps between evaluations
ckpt_interval = 5000
