// node-pg's value serialiser (the one its own Query uses for bind parameters); not in @types/pg.
declare module 'pg/lib/utils.js' {
  const utils: { prepareValue(value: unknown): unknown };
  export default utils;
}
