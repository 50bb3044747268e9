package dev.shardwise.data;

import java.util.ArrayList;
import java.util.List;

/** How a text is cut into documents, each of which is followed by the end-of-text token in a token file. */
public enum DocSeparator {
    /**
     * Documents are separated by one or more blank (empty or whitespace-only) lines; a document is the text
     * from its first to its last non-blank line, inner line breaks included, final line break excluded.
     */
    BLANK_LINE("blank-line"),
    /** Every non-blank line is a document (without its line break). */
    LINE("line"),
    /** The whole text, unchanged, is one document (none if the text is empty). */
    NONE("none");

    private final String label;

    DocSeparator(String label) {
        this.label = label;
    }

    /** The command-line spelling: {@code blank-line}, {@code line} or {@code none}. */
    public String label() {
        return label;
    }

    /**
     * The separator spelled {@code label}.
     *
     * @throws IllegalArgumentException for an unknown spelling, listing the known ones
     */
    public static DocSeparator parse(String label) {
        for (DocSeparator s : values()) {
            if (s.label.equals(label)) return s;
        }
        throw new IllegalArgumentException("unknown document separator '" + label
                + "'; use blank-line, line or none");
    }

    /** The documents of {@code text}, in order; never empty strings. */
    public List<String> split(String text) {
        List<String> docs = new ArrayList<>();
        if (this == NONE) {
            if (!text.isEmpty()) docs.add(text);
            return docs;
        }
        int n = text.length();
        int docStart = -1;     // start of the first non-blank line of the current document, or -1
        int docEnd = -1;       // end (before the line break) of its last non-blank line
        int i = 0;
        while (i < n) {
            int eol = text.indexOf('\n', i);
            int lineEnd = eol < 0 ? n : eol;
            int contentEnd = lineEnd > i && text.charAt(lineEnd - 1) == '\r' ? lineEnd - 1 : lineEnd;
            boolean blank = text.substring(i, contentEnd).isBlank();
            if (this == LINE) {
                if (!blank) docs.add(text.substring(i, contentEnd));
            } else if (blank) {
                if (docStart >= 0) docs.add(text.substring(docStart, docEnd));
                docStart = -1;
            } else {
                if (docStart < 0) docStart = i;
                docEnd = contentEnd;
            }
            i = eol < 0 ? n : eol + 1;
        }
        if (this == BLANK_LINE && docStart >= 0) docs.add(text.substring(docStart, docEnd));
        return docs;
    }

    @Override
    public String toString() {
        return label;
    }
}
