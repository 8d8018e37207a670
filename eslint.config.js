// ESLint: the recommended rules of ESLint and typescript-eslint, formatting left to Prettier.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'test-artifacts/', '.taskmaster/', 'src/dashboard/public/vendor/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: 'module', globals: globals.node },
    rules: {
      // An empty catch must say why ignoring the error is safe: a comment inside satisfies this.
      'no-empty': ['error', { allowEmptyCatch: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      'max-len': [
        'error',
        { code: 120, ignoreUrls: true, ignoreRegExpLiterals: true, ignoreStrings: true, ignoreTemplateLiterals: true },
      ],
    },
  },
  // TypeScript checks names itself; no-undef does not know its types.
  { files: ['**/*.ts'], rules: { 'no-undef': 'off' } },
  // The status page's scripts run in the browser.
  { files: ['src/dashboard/public/**/*.js'], languageOptions: { globals: globals.browser } },
  // Task modules in the 2016 style: CommonJS, keeping `this` (the run) in a variable for callbacks.
  {
    files: ['**/*.cjs', 'test/fixtures/tasks/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-this-alias': 'off', '@typescript-eslint/no-require-imports': 'off' },
  },
);
