/**
 * Training data: tokenizers, token files, datasets and samplers.
 *
 * <p>The path from text to batches:
 * <ol>
 *   <li>{@link dev.shardwise.data.Tokenizer}: built-in GPT-2/cl100k encodings ({@link dev.shardwise.data.Tokenizers#named}),
 *       or a {@link dev.shardwise.data.ByteLevelBpe} learned by {@link dev.shardwise.data.BpeTrainer} and saved/loaded
 *       ({@link dev.shardwise.data.Tokenizers#load}).</li>
 *   <li>{@link dev.shardwise.data.DatasetPreparer}: texts ({@link dev.shardwise.data.TextSource},
 *       {@link dev.shardwise.data.BundledCorpus}) cut into documents ({@link dev.shardwise.data.DocSeparator}) and
 *       written atomically as {@code train.tokens} and {@code val.tokens}.</li>
 *   <li>{@link dev.shardwise.data.TokenDataset}: a memory-mapped token file (its Javadoc specifies the format).</li>
 *   <li>{@link dev.shardwise.data.BatchSampler}: batches {@code [B, T+1]} of token windows, shuffled reproducibly from
 *       a seed and resumable from a saved position; sequential batches for validation.</li>
 * </ol>
 * Legend: B batch size, T sequence length, V vocabulary size, N tokens in a file, D documents.
 */
package dev.shardwise.data;
