/*
 * sampler.h - the pieces of the denoising loop, exposed for the unit tests. Each mirrors one function
 * of transformers' generation_diffusion_gemma.py (named per function).
 */
#ifndef DG_SAMPLER_H
#define DG_SAMPLER_H

#include <stdint.h>

/* LinearTemperatureScheduleLogitsProcessor: t_min + (t_max - t_min) * (cur_step / max_steps), with
 * cur_step counting down from max_steps to 1. As in the reference: t_max - t_min in double (Python
 * floats), cur_step / max_steps and the rest in float32 (0-dim tensors). */
float dg_temperature(int cur_step, int max_steps, double t_min, double t_max);

/* One canvas position: z are the temperature-scaled logits [V]. Writes w[v] = exp(z_v - max z)
 * (double), returns their sum; *entropy = entropy in nats of softmax(z); *argmax = first index of
 * the largest z. */
double dg_row_stats(const float *z, int V, double *w, float *entropy, int32_t *argmax);

/* Categorical sample by inverse CDF: the first index whose running sum of w exceeds u * wsum. */
int32_t dg_row_sample(const double *w, int V, double wsum, double u);

/* EntropyBoundSampler.accept_canvas: sort positions by entropy (ascending, ties by position), running
 * float32 sum c; accept position j iff c_j - H_j <= bound. order is scratch [n]. Returns the count. */
int dg_accept(const float *H, int n, double bound, int *order, uint8_t *accepted);

/* StableAndConfidentStoppingCriteria: stable iff the argmax equals each of the last `stability`
 * argmax canvases in hist ([stability][n], initialised to -1; stability 0 = always stable), then hist
 * is shifted and the argmax appended; confident iff mean(H) < confidence (float32). */
int dg_stop_rule(const int32_t *argmax, const float *H, int n, int stability, double confidence, int32_t *hist);

#endif
