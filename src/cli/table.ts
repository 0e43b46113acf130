/**
 * The plain-text tables the CLI prints (`instances list`, `hosts list`): columns padded to their
 * widest cell, two spaces apart, the last column unpadded so lines carry no trailing blanks.
 */
export function formatTable(header: readonly string[], lines: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((title, index) =>
    Math.max(title.length, ...lines.map((line) => (line[index] ?? '').length)),
  );
  const format = (cells: readonly string[]): string =>
    cells
      .map((cell, index) => (index === cells.length - 1 ? cell : cell.padEnd(widths[index] ?? 0)))
      .join('  ')
      .trimEnd();
  return [format(header), ...lines.map(format)].join('\n') + '\n';
}
