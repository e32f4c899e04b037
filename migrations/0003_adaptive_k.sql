-- Adaptive k: why an item stopped taking samples ('settled', 'confident', 'k_max'); NULL
-- under a fixed k. How many it took is its count of samples.
ALTER TABLE verdicts ADD COLUMN stopped TEXT;
